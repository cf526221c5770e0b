"""The lab's own stages: its configuration, the world (data files), the pre-trained base and the
base's scores (fact probes: is it capable? judges: is it aligned?).

world -> base -> base scores, then training.py (adapters, Aligner), w2s.py and report.py.
Each stage is cached by a key over its inputs (see cache.py).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightalign.io import read_jsonl, write_json, write_jsonl
from lightalign.lab.base_model import BaseModelConfig
from lightalign.lab.cache import build_atomically, stage_key
from lightalign.lab.world import WorldConfig


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
                                 vocab_size=768, epochs=12.0, batch_size=16, lr=5e-3),
        )


def world_key(cfg: LabConfig) -> str:
    return stage_key("world", dataclasses.asdict(cfg.world))


def base_key(cfg: LabConfig) -> str:
    return stage_key("base", world_key(cfg), dataclasses.asdict(cfg.base))


def build_world(cfg: LabConfig, root: Path, log=print) -> Path:
    from lightalign.lab.splits import build_splits, world_summary
    from lightalign.lab.world import World

    final = Path(root) / "data"

    def build(tmp: Path) -> dict:
        t = time.time()
        world = World(cfg.world)
        splits = build_splits(world)
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
        write_json(tmp / "world.json", world_summary(world))
        log(f"[world] wrote {len(splits)} splits to {final} in {time.time() - t:.1f}s")
        return {"rows": {k: len(v) for k, v in splits.items()}}

    build_atomically(final, world_key(cfg), build, log, "world")
    return final


def build_base(cfg: LabConfig, root: Path, log=print) -> Path:
    from lightalign.lab.base_model import train_base

    final = Path(root) / "base"

    def build(tmp: Path) -> dict:
        log("[base] pre-training the mini-lab base model (a tiny Llama) from scratch")
        info = train_base(cfg.base, Path(root) / "data", tmp)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        log(f"[base] trained {info['params']:,} params, {info['epochs']:g} epochs of {info['tokens']:,} tokens, "
            f"in {info['seconds']:.0f}s")
        return info

    build_atomically(final, base_key(cfg), build, log, "base")
    return final


def score_base(cfg: LabConfig, root: Path, log=print) -> dict:
    """Fact probes and judge rates of the base model (cached by the base's key)."""
    from lightalign.lab.judges import Judge
    from lightalign.lab.scores import judge_model, probe_accuracy
    from lightalign.loading import load_for_inference

    root = Path(root)
    out = root / "scores" / "base.json"
    key = base_key(cfg)
    if out.exists():
        cached = json.loads(out.read_text())
        if cached.get("key") == key:
            log(f"[scores] cached: {out}")
            return cached
    model, tok = load_for_inference(str(root / "base"))
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
