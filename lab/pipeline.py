"""`lightalign lab` as a pipeline of cached stages.

world -> base -> base scores -> adapters (SFT, DPO) -> Aligner -> report.
Each stage writes into a temporary folder and renames it into place with a `stage.json` holding
the key of its inputs; a stage whose key matches is skipped, so a second run is fast and a run
killed mid-stage leaves no half-written stage behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightalign import __version__
from lightalign.io import read_jsonl, write_json, write_jsonl
from lightalign.lab.base_model import BaseModelConfig
from lightalign.lab.world import WorldConfig

DATA_VERSION = 4  # bump when the world generator or the base tokenizer changes what they make


@dataclass
class LabConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)

    @classmethod
    def small(cls) -> "LabConfig":
        """A lab small enough for the test suite: same shapes, fewer entities, a smaller model."""
        return cls(
            world=WorldConfig(seed=3, n_lands=10, n_people=12, n_extra_towns=4, n_unknown_lands=10,
                              max_addend=5, max_quantity=4, docs_per_fact=24, n_capability_docs=60),
            base=BaseModelConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                 vocab_size=768, epochs=30.0, batch_size=16, lr=4e-3),
        )


def _key(*parts) -> str:
    blob = json.dumps([__version__, DATA_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stage_key(path: Path) -> str | None:
    try:
        return json.loads((path / "stage.json").read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def _commit_stage(tmp: Path, final: Path, key: str, info: dict) -> None:
    write_json(tmp / "stage.json", {"key": key, **info})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def world_key(cfg: LabConfig) -> str:
    return _key("world", dataclasses.asdict(cfg.world))


def base_key(cfg: LabConfig) -> str:
    return _key("base", world_key(cfg), dataclasses.asdict(cfg.base))


def build_world(cfg: LabConfig, root: Path, log=print) -> Path:
    from lightalign.lab.splits import build_splits, world_summary
    from lightalign.lab.world import World

    final = Path(root) / "data"
    key = world_key(cfg)
    if _stage_key(final) == key:
        log(f"[world] cached: {final}")
        return final
    t = time.time()
    world = World(cfg.world)
    splits = build_splits(world)
    tmp = _fresh_tmp(final)
    for name, rows in splits.items():
        write_jsonl(tmp / f"{name}.jsonl", rows)
    write_json(tmp / "world.json", world_summary(world))
    _commit_stage(tmp, final, key, {"rows": {k: len(v) for k, v in splits.items()}})
    log(f"[world] wrote {len(splits)} splits to {final} in {time.time() - t:.1f}s")
    return final


def build_base(cfg: LabConfig, root: Path, log=print) -> Path:
    from lightalign.lab.base_model import train_base

    final = Path(root) / "base"
    key = base_key(cfg)
    if _stage_key(final) == key:
        log(f"[base] cached: {final}")
        return final
    log("[base] pre-training the mini-lab base model (a tiny Llama) from scratch")
    tmp = _fresh_tmp(final)
    info = train_base(cfg.base, Path(root) / "data", tmp)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    _commit_stage(tmp, final, key, info)
    log(f"[base] trained {info['params']:,} params, {info['epochs']:g} epochs of {info['tokens']:,} tokens, "
        f"in {info['seconds']:.0f}s")
    return final


def load_causal_lm(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def score_base(cfg: LabConfig, root: Path, log=print) -> dict:
    """Fact probes and judge rates of the base model (cached by the base's key)."""
    from lightalign.lab.judges import Judge
    from lightalign.lab.scores import judge_model, probe_accuracy

    root = Path(root)
    out = root / "scores" / "base.json"
    key = base_key(cfg)
    if out.exists():
        cached = json.loads(out.read_text())
        if cached.get("key") == key:
            log(f"[scores] cached: {out}")
            return cached
    model, tok = load_causal_lm(root / "base")
    probes = read_jsonl(root / "data" / "probes.jsonl")
    records = read_jsonl(root / "data" / "eval_prompts.jsonl")
    judge = Judge.from_file(root / "data" / "world.json")
    rates, replies = judge_model(model, tok, judge, records, progress=True)
    scores = {
        "key": key,
        "system": "base",
        "probe_accuracy": probe_accuracy(model, tok, probes),
        "probe_accuracy_heldout": probe_accuracy(model, tok, [p for p in probes if p["heldout"]]),
        **{m: r["rate"] for m, r in rates.items()},
        "n": {m: r["n"] for m, r in rates.items()},
    }
    write_json(out, scores)
    write_jsonl(root / "scores" / "base_replies.jsonl",
                [{"id": r["id"], "prompt": r["prompt"], "reply": a} for r, a in zip(records, replies)])
    return scores


def format_table(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        return "-" if v is None else f"{100 * v:5.1f}%" if isinstance(v, float) else str(v)

    head = ["system"] + cols
    body = [[r.get("system", "?")] + [cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
