"""How every stage of `lightalign lab` is cached: by a key over its inputs, never by "the file exists".

A stage's folder holds `stage.json` with the key of what it was built from (its config, the seed, the
keys of the stages it reads). A stage whose key matches is reused; any other is rebuilt from scratch.
- `build_atomically`: the stage writes into `<name>.tmp/` and is renamed into place with its key, so a
  run killed mid-stage leaves nothing that looks finished.
- `train_once`: training runs are resumable on their own (committed checkpoints), so their folder gets
  its key first and counts as done only when the trainer has written its final metrics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from lightalign import __version__
from lightalign.io import write_json

DATA_VERSION = 5  # bump when the world generator or the base tokenizer changes what they make
STAGE_FILE = "stage.json"


def stage_key(*parts) -> str:
    blob = json.dumps([__version__, DATA_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_key(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / STAGE_FILE).read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_atomically(final: Path, key: str, build: Callable[[Path], dict], log=print, name: str = "") -> bool:
    """Run `build(tmp_dir) -> info` unless `final` holds this key; returns True when it was built."""
    final = Path(final)
    if read_key(final) == key:
        log(f"[{name or final.name}] cached: {final}")
        return False
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = build(tmp) or {}
    write_json(tmp / STAGE_FILE, {"key": key, **info})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return True


def train_once(out: Path, key: str, train: Callable[[], object], is_complete: Callable[[Path], bool],
               log=print, name: str = "") -> bool:
    """Run `train()` (which writes into `out`) unless `out` is a complete run of this key."""
    out = Path(out)
    if read_key(out) == key and is_complete(out):
        log(f"[{name or out.name}] cached: {out}")
        return False
    if out.exists() and read_key(out) != key:
        shutil.rmtree(out)  # built from other inputs: its checkpoints must not be resumed
    # the key goes first, so a run killed mid-way resumes its own checkpoints next time
    write_json(out / STAGE_FILE, {"key": key})
    log(f"[{name or out.name}] training {out}")
    train()
    return True
