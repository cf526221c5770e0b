"""Dataset schemas -> the conversational rows TRL trainers take.

SFT rows:        {"prompt": [messages], "completion": [{"role": "assistant", ...}]}
Preference rows: {"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg]}

Schemas: the mini-lab files (`lab`), chat logs (`messages`), and three public hub sets whose
published column layouts we read: PKU-Alignment/PKU-SafeRLHF, HuggingFaceH4/ultrafeedback_binarized,
Anthropic/hh-rlhf. Conversational rows let the tokenizer's own chat template mark where the
answer starts (so loss is on the answer only and BOS is not doubled). Rows that fit the schema but
carry no usable pair (a tie, two unsafe answers) are skipped and counted; malformed rows are
skipped too, but a file where many rows are malformed is a wrong schema and raises UserError.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from lightalign.errors import UserError

MAX_BAD_FRACTION = 0.05


class BadRow(ValueError):
    """A row that does not fit the declared schema."""


def _text(row: dict, name: str) -> str:
    if name not in row:
        raise BadRow(f"missing field {name!r} (has: {', '.join(sorted(row)) or 'nothing'})")
    if not isinstance(row[name], str):
        raise BadRow(f"field {name!r} must be a string, got {type(row[name]).__name__}")
    if not row[name].strip():
        raise BadRow(f"field {name!r} is empty")
    return row[name]


def _messages(value, name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadRow(f"field {name!r} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadRow(f"{name}[{i}] must be an object with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _split_last_answer(msgs: list[dict], name: str) -> tuple[list[dict], list[dict]]:
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise BadRow(f"{name} must end with an assistant message after at least one user turn")
    return msgs[:-1], [msgs[-1]]


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# ---- one adapter per schema: (row, kind, options) -> row | None (skip) ; raises BadRow --------------

def lab_row(row: dict, kind: str, opts) -> dict | None:
    prompt = _user(_text(row, "prompt"))
    if kind == "sft":
        answer = row.get("completion", row.get("chosen"))
        if answer is None:
            raise BadRow("missing field 'completion' (or 'chosen')")
        return {"prompt": prompt, "completion": _answer(_text({"completion": answer}, "completion"))}
    return {"prompt": prompt, "chosen": _answer(_text(row, "chosen")), "rejected": _answer(_text(row, "rejected"))}


def messages_row(row: dict, kind: str, opts) -> dict | None:
    if kind != "sft":
        raise BadRow("schema 'messages' has no rejected answers; use it for SFT only")
    prompt, completion = _split_last_answer(_messages(row.get("messages"), "messages"), "messages")
    return {"prompt": prompt, "completion": completion}


def pku_saferlhf_row(row: dict, kind: str, opts) -> dict | None:
    """PKU-SafeRLHF: prompt, response_0/1, is_response_0/1_safe, better_response_id, safer_response_id."""
    prompt = _user(_text(row, "prompt"))
    responses = [_text(row, "response_0"), _text(row, "response_1")]
    key = "safer_response_id" if opts.preference == "safer" else "better_response_id"
    pick = row.get(key)
    if pick not in (0, 1):
        raise BadRow(f"field {key!r} must be 0 or 1, got {pick!r}")
    if kind == "sft":
        safe = row.get(f"is_response_{pick}_safe")
        if not isinstance(safe, bool):
            raise BadRow(f"field 'is_response_{pick}_safe' must be true/false")
        return {"prompt": prompt, "completion": _answer(responses[pick])} if safe else None
    if responses[0].strip() == responses[1].strip():
        return None
    return {"prompt": prompt, "chosen": _answer(responses[pick]), "rejected": _answer(responses[1 - pick])}


def ultrafeedback_row(row: dict, kind: str, opts) -> dict | None:
    """HuggingFaceH4/ultrafeedback_binarized: chosen/rejected/messages are full chats; score_chosen/rejected."""
    if kind == "sft":
        msgs = _messages(row.get("messages", row.get("chosen")), "messages")
        prompt, completion = _split_last_answer(msgs, "messages")
        return {"prompt": prompt, "completion": completion}
    chosen = _messages(row.get("chosen"), "chosen")
    rejected = _messages(row.get("rejected"), "rejected")
    prompt, chosen_answer = _split_last_answer(chosen, "chosen")
    _, rejected_answer = _split_last_answer(rejected, "rejected")
    sc, sr = row.get("score_chosen"), row.get("score_rejected")
    if sc is not None and sr is not None and sc == sr:
        return None  # a tie carries no preference
    if chosen_answer[0]["content"].strip() == rejected_answer[0]["content"].strip():
        return None
    return {"prompt": prompt, "chosen": chosen_answer, "rejected": rejected_answer}


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' transcripts -> messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRow("transcript must start with '\\n\\nHuman: '")
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return msgs


def hh_rlhf_row(row: dict, kind: str, opts) -> dict | None:
    """Anthropic/hh-rlhf: {"chosen": transcript, "rejected": transcript} sharing all turns but the last."""
    prompt, chosen = _split_last_answer(parse_hh(_text(row, "chosen")), "chosen")
    if not chosen[0]["content"]:
        return None
    if kind == "sft":
        return {"prompt": prompt, "completion": chosen}
    rprompt, rejected = _split_last_answer(parse_hh(_text(row, "rejected")), "rejected")
    if rprompt != prompt or rejected[0]["content"] == chosen[0]["content"]:
        return None  # the two transcripts diverge before the last answer: not a clean pair
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


ADAPTERS: dict[str, Callable] = {
    "lab": lab_row,
    "messages": messages_row,
    "pku_saferlhf": pku_saferlhf_row,
    "ultrafeedback_binarized": ultrafeedback_row,
    "hh_rlhf": hh_rlhf_row,
}


# ---- reading -----------------------------------------------------------------------------------

def _raw_rows(data_cfg) -> Iterator[tuple[str, dict]]:
    if data_cfg.path:
        path = Path(data_cfg.path)
        if path.suffix == ".parquet":
            import datasets

            for i, row in enumerate(datasets.Dataset.from_parquet(str(path)), 1):
                yield f"{path} row {i}", row
            return
        from lightalign.io import read_records

        for line, row in read_records(path):
            yield f"{path}:{line}", row
        return
    try:
        import datasets

        ds = datasets.load_dataset(data_cfg.hub_id, data_cfg.hub_config, split=data_cfg.split)
    except Exception as e:  # offline, unknown id, missing split: one message naming the dataset
        raise UserError(f"data.hub_id: cannot load {data_cfg.hub_id!r} (split {data_cfg.split!r}): {e}") from None
    for i, row in enumerate(ds):
        yield f"{data_cfg.hub_id}[{data_cfg.split}] row {i}", row


def load_rows(data_cfg, kind: str) -> tuple[list[dict], dict]:
    """Read `data_cfg` as `kind` ('sft' or 'preference'); returns (rows, stats)."""
    adapt = ADAPTERS[data_cfg.schema]
    rows, skipped, bad = [], 0, []
    seen = 0
    for where, raw in _raw_rows(data_cfg):
        seen += 1
        try:
            row = adapt(raw, kind, data_cfg)
        except BadRow as e:
            bad.append(f"{where}: {e}")
            continue
        if row is None:
            skipped += 1
            continue
        if data_cfg.system_prompt:
            row["prompt"] = [{"role": "system", "content": data_cfg.system_prompt}] + row["prompt"]
        rows.append(row)
        if data_cfg.max_rows and len(rows) >= data_cfg.max_rows:
            break
    source = data_cfg.path or data_cfg.hub_id
    if bad and (not rows or len(bad) > MAX_BAD_FRACTION * seen):
        raise UserError(f"{bad[0]} (schema {data_cfg.schema!r}; {len(bad)} of {seen} rows do not fit it)")
    if not rows:
        raise UserError(f"{source}: no usable {kind} rows in schema {data_cfg.schema!r} ({skipped} skipped)")
    return rows, {"rows": len(rows), "skipped": skipped, "malformed": len(bad), "first_malformed": bad[:3]}


def to_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)
