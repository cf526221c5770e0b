"""Training data for the SFT, DPO and ORPO recipes: `data` section -> TRL conversational rows.

SFT rows:        {"prompt": [messages], "completion": [{"role": "assistant", ...}]}
Preference rows: {"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg]}

The schemas (data.schema) and their rules live in lightalign.schemas, shared with the Aligner and
eval. Conversational rows let the tokenizer's own chat template mark where the answer starts (so
loss is on the answer only and BOS is not doubled).
"""

from __future__ import annotations

from lightalign import schemas


def load_rows(data_cfg, kind: str) -> tuple[list[dict], dict]:
    """Read `data_cfg` (a DataSection) as `kind` ('sft' or 'preference'); returns (rows, stats).

    stats (see lightalign.schemas.load) counts malformed and skipped rows; `schemas.problems(stats)`
    words them for the console."""
    options = schemas.Options(preference=data_cfg.preference,
                              keep_unsafe_pairs=data_cfg.keep_unsafe_pairs,
                              system_prompt=data_cfg.system_prompt)
    source, hub = (data_cfg.path, False) if data_cfg.path else (data_cfg.hub_id, True)
    return schemas.load(source, data_cfg.schema, kind, options, split=data_cfg.split,
                        hub_config=data_cfg.hub_config, hub=hub, max_rows=data_cfg.max_rows)


def to_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)
