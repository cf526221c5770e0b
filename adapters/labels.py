"""Audit of the SFT label mask, run on the prepared dataset before any training step.

The classic silent failures: loss on the prompt (mask all 1), nothing learned (mask all 0), the
answer's EOS masked out (the model never learns to stop), a second BOS from tokenizing already
templated text. TRL builds the labels; this checks them, because each failure still gives a
healthy-looking loss curve. Hand-written: no library ships such a check.
"""

from __future__ import annotations

IGNORE = -100


def check_sequence(input_ids: list[int], labels: list[int], bos_id: int | None, eos_id: int,
                   template_tail=None) -> None:
    """Raise ValueError describing what is wrong with one (unpacked) training sequence.

    `template_tail(ids) -> bool`: whether tokens learned after the answer's EOS are only the chat
    template's closing text (ChatML ends a turn with "<|im_end|>\n", and TRL learns the newline too;
    generation stops at the EOS, so the newline is harmless)."""
    if len(input_ids) != len(labels):
        raise ValueError(f"labels ({len(labels)}) and input_ids ({len(input_ids)}) differ in length")
    learned = [i for i, lab in enumerate(labels) if lab != IGNORE]
    if not learned:
        raise ValueError("every label is -100: the answer is masked, nothing would be learned")
    if len(learned) == len(labels):
        raise ValueError("no label is -100: the loss would also train on the prompt")
    if learned[0] == 0:
        raise ValueError("the first token is learned: the prompt is not masked")
    if any(labels[i] != input_ids[i] for i in learned):
        raise ValueError("learned labels differ from the input tokens")
    if learned != list(range(learned[0], learned[-1] + 1)):
        raise ValueError("learned labels are not one contiguous answer span")
    if labels[learned[-1]] != eos_id:
        eos_at = [i for i in learned if labels[i] == eos_id]
        tail = input_ids[eos_at[-1] + 1:learned[-1] + 1] if eos_at else None
        if tail is None or template_tail is None or not template_tail(tail):
            raise ValueError("the answer's last learned token is not EOS: the model would not learn to stop")
    if bos_id is not None and bos_id != eos_id and input_ids[:2] == [bos_id, bos_id]:
        raise ValueError("the sequence starts with two BOS tokens (templated text tokenized with special tokens)")


def split_packed(row: dict) -> list[tuple[list[int], list[int]]]:
    ids, labels = list(row["input_ids"]), list(row["labels"])
    lengths = row.get("seq_lengths") or [len(ids)]
    out, start = [], 0
    for n in lengths:
        out.append((ids[start:start + n], labels[start:start + n]))
        start += n
    return out


def audit(dataset, tokenizer, max_rows: int = 64, max_length: int | None = None) -> dict:
    """Check the first rows of a prepared (tokenized, maybe packed) SFT dataset; raise on failure.

    Sequences cut by `max_length` may lose their EOS; they are counted, and only an audit where no
    sequence keeps its EOS fails on that ground.
    """
    checked, truncated, first_error = 0, 0, None
    for row in dataset.select(range(min(max_rows, len(dataset)))):
        for ids, labels in split_packed(row):
            try:
                check_sequence(ids, labels, tokenizer.bos_token_id, tokenizer.eos_token_id,
                               template_tail=lambda tail: not tokenizer.decode(tail).strip())
            except ValueError as e:
                if "not EOS" in str(e) and max_length and len(ids) >= max_length - 1:
                    truncated += 1
                    continue
                first_error = first_error or str(e)
            checked += 1
    if first_error:
        raise ValueError(first_error)
    if checked == 0:
        raise ValueError("every audited sequence was cut before its EOS: raise data.max_length")
    return {"sequences_checked": checked, "truncated": truncated}
