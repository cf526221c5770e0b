"""The mini-lab's closing report: every system whose artifacts exist in the lab, on the held-out lab
prompts, judged by the lab's exact judges, with the alignment tax and the Aligner's do-no-harm rate.

The lab is scored here only, through `lightalign eval` as a user would run it: the config is written to
<lab>/report/eval.yaml (rerun it with `lightalign eval runs/minilab/report/eval.yaml`), and the app's
config to <lab>/app.yaml (`lightalign app` opens it).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lightalign.config import load_config
from lightalign.io import atomic_write_text, write_jsonl

LAB_JUDGE = "lightalign.lab.judges:eval_judge"
ROBUSTNESS_PROMPTS = 120  # prompts asked again in 4 rule-made rewordings each
ADAPTERS = {"sft": "base+sft", "sft_one_family": "base+sft (one family)", "dpo": "base+dpo"}


def adapter_ready(path: Path) -> bool:
    """A finished lab adapter: PEFT files, and metrics.json (training writes it last)."""
    return all((path / f).exists() for f in ("adapter_config.json", "adapter_model.safetensors", "metrics.json"))


def aligner_ready(path: Path) -> bool:
    return (path / "aligner_config.json").exists() and (path / "metrics.json").exists()


def urial_examples(lab: Path, out: Path) -> Path:
    """Three stylistic examples from the lab's *training* SFT data (answer, refuse, abstain), so URIAL
    sees the style but never the held-out entities; written out so the report shows what was used."""
    from lightalign.evaluation.systems import load_urial_examples

    path = out / "urial_examples.jsonl"
    write_jsonl(path, load_urial_examples(str(lab / "data" / "sft.jsonl")))
    return path


def eval_config(lab: Path, quick: bool = False) -> dict:
    """The `lightalign eval` config (as plain data) comparing every system the lab holds."""
    lab = Path(lab)
    out = lab / "report"
    out.mkdir(parents=True, exist_ok=True)
    systems = [{"name": "base", "kind": "base"}]
    ready = {name: str(lab / "adapters" / name) for name in ADAPTERS if adapter_ready(lab / "adapters" / name)}
    systems += [{"name": ADAPTERS[name], "kind": "adapter", "adapter": path} for name, path in ready.items()]
    aligner = lab / "aligner"
    if aligner_ready(aligner):
        systems.append({"name": "base+aligner", "kind": "aligner", "aligner": str(aligner)})
        if "dpo" in ready:
            systems.append({"name": "base+dpo+aligner", "kind": "adapter+aligner", "adapter": ready["dpo"],
                            "aligner": str(aligner)})
    w2s = lab / "adapters" / "w2s_dpo"
    if adapter_ready(w2s):
        systems.append({"name": "base+w2s_dpo (aligner-labelled)", "kind": "adapter", "adapter": str(w2s)})
    systems.append({"name": "urial", "kind": "urial", "urial_examples": str(urial_examples(lab, out))})
    world = str(lab / "data" / "world.json")
    return {
        "title": "mini-lab: what alignment buys and costs",
        # the adapters name their base and its 4-bit quantization themselves (run_config.json)
        "base": {"path": str(lab / "base")},
        "systems": systems,
        # rates on phrasing families the alignment data used (seen) and on those it never did (heldout)
        "dataset": {"schema": "prompt_only", "path": str(lab / "data" / "eval_prompts.jsonl"),
                    "group_by": ["family_split"], **({"limit": 160, "shuffle": True} if quick else {})},
        "judges": [{"kind": "python", "factory": LAB_JUDGE, "options": {"world": world}}],
        "generation": {"max_new_tokens": 48, "batch_size": 64, "aligner_batch_size": 32},
        # and a third kind of wording, from rules that know nothing of the lab's generator
        "robustness": {"per_prompt": 4, "max_prompts": 40 if quick else ROBUSTNESS_PROMPTS},
        "tax": {"capability": str(lab / "data" / "capability.jsonl"),
                "aligner_eval": str(lab / "data" / "aligner_eval.jsonl"),
                **({"max_docs": 60, "max_triples": 160} if quick else {})},
        "output": str(out),
        "bootstrap": 1000,
    }


def app_config(lab: Path) -> dict:
    """What `lightalign app` serves for the lab: base, DPO adapter, Aligner, example prompts, judges."""
    lab = Path(lab).resolve()  # the app reads relative paths from its working directory
    return {"base": str(lab / "base"), "adapter": str(lab / "adapters" / "dpo"), "aligner": str(lab / "aligner"),
            "examples": str(lab / "data" / "eval_prompts.jsonl"),
            "judge": LAB_JUDGE, "judge_options": {"world": str(lab / "data" / "world.json")}}


def run_lab_report(lab: Path, quick: bool = False, log=print) -> dict:
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    lab = Path(lab)
    data = eval_config(lab, quick)
    path = lab / "report" / "eval.yaml"
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    atomic_write_text(lab / "app.yaml", yaml.safe_dump(app_config(lab), sort_keys=False))
    cfg = load_config(EvalConfig, path)
    log(f"[report] systems: {', '.join(s.name for s in cfg.systems)}")
    return run_eval(cfg, log=log)
