"""The SFT label mask: prompt tokens -100, the answer and its EOS learned, one BOS; the audit
fails on an all-0 or all-1 mask; packed rows never attend across sequences."""

from __future__ import annotations

import pytest
from helpers.adapters import tiny_config, write_lab_data

from lightalign.adapters.labels import audit, check_sequence

BOS, EOS = 1, 2


def test_check_sequence_accepts_prompt_masked_answer_with_eos():
    check_sequence([BOS, 5, 6, 7, 8, EOS], [-100, -100, -100, 7, 8, EOS], BOS, EOS)


@pytest.mark.parametrize("ids, labels, message", [
    ([BOS, 5, 6, 7, EOS], [-100] * 5, "every label is -100"),           # all-0 mask
    ([BOS, 5, 6, 7, EOS], [BOS, 5, 6, 7, EOS], "no label is -100"),      # all-1 mask
    ([BOS, 5, 6, 7, EOS], [-100, -100, 6, 7, -100], "not EOS"),          # EOS masked out
    ([BOS, BOS, 6, 7, EOS], [-100, -100, -100, 7, EOS], "two BOS"),      # templated text + add_special_tokens
    ([BOS, 5, 6, 7, EOS], [-100, 5, -100, 7, EOS], "contiguous"),
])
def test_check_sequence_rejects_broken_masks(ids, labels, message):
    with pytest.raises(ValueError, match=message):
        check_sequence(ids, labels, BOS, EOS)


NEWLINE, WORD = 9, 10


def test_chat_template_closing_text_after_eos_may_be_learned():
    """ChatML closes a turn with "<|im_end|>\n" and TRL learns the newline: accepted only when the tokens
    after the EOS are the template's whitespace, never when answer text follows the EOS."""
    whitespace_only = lambda tail: all(t == NEWLINE for t in tail)  # noqa: E731
    check_sequence([BOS, 5, 6, 7, EOS, NEWLINE], [-100, -100, 6, 7, EOS, NEWLINE], BOS, EOS, whitespace_only)
    with pytest.raises(ValueError, match="not EOS"):
        check_sequence([BOS, 5, 6, 7, EOS, WORD], [-100, -100, 6, 7, EOS, WORD], BOS, EOS, whitespace_only)
    with pytest.raises(ValueError, match="not EOS"):  # no EOS learned at all
        check_sequence([BOS, 5, 6, 7, NEWLINE], [-100, -100, 6, 7, NEWLINE], BOS, EOS, whitespace_only)
    with pytest.raises(ValueError, match="not EOS"):  # without a template rule, a tail is refused as before
        check_sequence([BOS, 5, 6, 7, EOS, NEWLINE], [-100, -100, 6, 7, EOS, NEWLINE], BOS, EOS)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir, small_splits):
    from lightalign.adapters import sft

    tmp = tmp_path_factory.mktemp("labels")
    paths = write_lab_data(tmp, small_splits, n=16)
    _, cfg = tiny_config("sft", tiny_model_dir, paths["sft"], tmp / "out", sft={"packing": False})
    trainer, tok, _ = sft.build_trainer(cfg)
    return trainer, tok, small_splits["sft"][:16]


def test_trl_prepared_rows_mask_prompt_and_learn_eos(prepared):
    trainer, tok, rows = prepared
    for row, src in zip(trainer.train_dataset, rows):
        ids, labels = row["input_ids"], row["labels"]
        learned = [i for i, lab in enumerate(labels) if lab != -100]
        prompt_text = tok.apply_chat_template([{"role": "user", "content": src["prompt"]}], tokenize=False,
                                              add_generation_prompt=True)
        n_prompt = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
        assert learned[0] == n_prompt                     # every prompt token is -100
        assert labels[-1] == tok.eos_token_id == ids[-1]  # EOS is learned
        assert tok.decode([ids[i] for i in learned], skip_special_tokens=True) == src["completion"]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # no double BOS
        assert tok.pad_token_id != tok.eos_token_id
    assert audit(trainer.train_dataset, tok)["sequences_checked"] == len(rows)


def test_audit_fails_on_all_masked_and_unmasked_datasets(prepared):
    import datasets

    trainer, tok, _ = prepared
    rows = trainer.train_dataset.select(range(4)).to_list()
    for broken in ([-100] * len(r["labels"]) for r in rows), (list(r["input_ids"]) for r in rows):
        bad = datasets.Dataset.from_list([{**r, "labels": lab} for r, lab in zip(rows, broken)])
        with pytest.raises(ValueError):
            audit(bad, tok)


def test_packed_rows_do_not_attend_across_sequences(tiny_model_dir):
    """Logits of each sequence inside a packed row equal its logits alone (fp32 tiny model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lightalign.adapters.batching import PackedRowsCollator

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    seqs = [[1, 10, 11, 12, 2], [1, 20, 21, 2], [1, 30, 31, 32, 33, 34, 2]]
    batch = PackedRowsCollator(pad_token_id=0)([
        {"input_ids": seqs[0] + seqs[1], "labels": seqs[0] + seqs[1], "seq_lengths": [5, 4]},
        {"input_ids": seqs[2], "labels": seqs[2], "seq_lengths": [7]},
    ])
    assert "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert batch["labels"][0, 5] == -100 and batch["labels"][1, 7:].eq(-100).all()  # new-sequence start, pads
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = [model(input_ids=torch.tensor([s])).logits[0] for s in seqs]
    torch.testing.assert_close(packed[0, :5], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[0, 5:9], alone[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[1, :7], alone[2], atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # control: the same row with a plain all-ones mask does leak across sequences
        leaky = model(input_ids=batch["input_ids"][:1], use_cache=False).logits
    assert not torch.allclose(leaky[0, 5:9], alone[1], atol=1e-3)
