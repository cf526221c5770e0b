"""Eval prompt sets: any schema of lightalign.schemas read as prompts, one record shape for the judges:
{"id", "prompt", "kind", ...the row's own fields}. `kind` is what rule judges key on ("harmful",
"safe", or the data's own kind; "general" when the data has none).

Local files are read directly (.jsonl, .json, .csv, .parquet, optionally .gz/.xz compressed), with
errors naming file and line. Anything else is treated as a hub id and loaded with `datasets`.
"""

from __future__ import annotations

import random

from lightalign import schemas


def load_prompts(schema: str, path: str, split: str = "test", prompt_field: str = "prompt",
                 limit: int | None = None, shuffle: bool = False, seed: int = 0, log=None) -> list[dict]:
    """The prompt records of `path` in `schema`; the first `limit` (after a seeded shuffle when asked).
    `log` receives one line per kind of dropped row (malformed, skipped)."""
    records, stats = schemas.load(path, schema, "prompts", schemas.Options(prompt_field=prompt_field),
                                  split=split, where="dataset.schema")
    for line in schemas.problems(stats) if log else ():
        log(f"[eval] {path}: {line}")
    seen: set = set()
    for r in records:  # the cache and the report join on ids
        while r["id"] in seen:
            r["id"] = f"{r['id']}_"
        seen.add(r["id"])
    if shuffle:
        random.Random(seed).shuffle(records)
    return records[:limit] if limit else records


def load_dataset_config(cfg, log=None) -> list[dict]:
    return load_prompts(cfg.schema, cfg.path, cfg.split, cfg.prompt_field, cfg.limit, cfg.shuffle, cfg.seed, log)
