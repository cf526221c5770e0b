"""`lightalign lab`: build the mini-lab and run every stage on it, cached.

The main job on a fresh machine: generates the world, pre-trains the base model, scores it,
trains the alignment adapters and the Aligner, and ends with the comparison report.
"""

from __future__ import annotations

HELP = "Build the mini-lab (synthetic world + tiny base model), align it, and report scores."

STAGES = ["world", "base", "scores", "adapters", "aligner", "weak2strong", "report"]


def add_arguments(p):
    p.add_argument("--dir", default="runs/minilab", help="lab folder (default: runs/minilab)")
    p.add_argument("--small", action="store_true", help="a small lab for smoke tests (fewer entities, smaller model)")
    p.add_argument("--until", choices=STAGES, default=STAGES[-1], help="stop after this stage")
    p.add_argument("--seed", type=int, default=None, help="world and training seed (default 0)")


def run(args):
    import dataclasses
    import time
    from pathlib import Path

    from lightalign.io import write_json
    from lightalign.lab import pipeline

    root = Path(args.dir)
    cfg = pipeline.LabConfig.small() if args.small else pipeline.LabConfig()
    if args.seed is not None:
        cfg.world.seed = cfg.base.seed = args.seed
    stop = STAGES.index(args.until)
    summary: dict = {"dir": str(root), "config": dataclasses.asdict(cfg), "stages": {}}
    rows: list[dict] = []
    t0 = time.time()

    def stage(name, fn):
        if STAGES.index(name) > stop:
            return None
        t = time.time()
        try:
            result = fn()
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("lightalign"):
                raise
            print(f"[{name}] skipped: {e.name} is not part of this install")
            summary["stages"][name] = {"skipped": f"{e.name} missing"}
            return None
        summary["stages"][name] = {"seconds": round(time.time() - t, 1)}
        return result

    stage("world", lambda: pipeline.build_world(cfg, root))
    stage("base", lambda: pipeline.build_base(cfg, root))
    base = stage("scores", lambda: pipeline.score_base(cfg, root))
    if base:
        rows.append({**base, "system": "base (fp32, probes)"})
        summary["base"] = base

    def adapters():
        from lightalign.adapters.lab_stage import train_lab_adapters

        return train_lab_adapters(root, quick=args.small)

    def aligner():
        from lightalign.aligner.lab_stage import evaluate_lab_aligner, train_lab_aligner

        train_lab_aligner(root, quick=args.small)
        return evaluate_lab_aligner(root)

    def weak2strong():
        from lightalign.lab.weak_to_strong import run_weak_to_strong

        return run_weak_to_strong(root, quick=args.small)

    def report():
        from lightalign.evaluation.lab_report import run_lab_report

        return run_lab_report(root, quick=args.small)

    for name, fn in [("adapters", adapters), ("aligner", aligner), ("weak2strong", weak2strong), ("report", report)]:
        result = stage(name, fn)
        if result is not None:
            summary[name] = result
            rows.extend(r for r in result.get("table", []) if isinstance(r, dict))
            if name == "weak2strong":
                w2s = result["scores"]["adapter"]
                rows.append({"system": "base+w2s_dpo (aligner-labelled)", "nll_tax": result["scores"].get(
                    "nll_tax_vs_base_4bit"), **{m: w2s.get(m) for m in ("helpful", "harmless", "honest")}})

    summary["seconds"] = round(time.time() - t0, 1)
    write_json(root / "lab.json", summary)
    cols = ["helpful", "harmless", "honest", "probe_accuracy", "nll_tax", "edit_rate", "do_no_harm"]
    print()
    print(pipeline.format_table(rows, [c for c in cols if any(c in r for r in rows)]))
    print(f"\nwrote {root / 'lab.json'} ({summary['seconds']:.0f}s)")
    return 0
