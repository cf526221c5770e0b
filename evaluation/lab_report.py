"""The mini-lab's closing report: every system whose artifacts exist in the lab, on the held-out lab
prompts, judged by the lab's exact judges, with the alignment tax and the Aligner's do-no-harm rate.

`lightalign lab` calls run_lab_report(lab_dir) as its last stage; `lightalign eval --lab DIR` runs it alone.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.io import write_jsonl


def adapter_ready(path: Path) -> bool:
    """A finished lab adapter: PEFT files, and metrics.json (the adapter stage writes it last)."""
    return all((path / f).exists() for f in ("adapter_config.json", "adapter_model.safetensors", "metrics.json"))


def aligner_ready(path: Path) -> bool:
    """A finished lab Aligner: aligner_config.json is written after the weights by Aligner.save_pretrained."""
    return (path / "aligner_config.json").exists() and any(path.glob("*.safetensors"))


def adapter_quantization(adapter: Path) -> str:
    """How the adapter's base was loaded in training (its run_config.json): the adapter is evaluated on
    the same weights, so the base system and the alignment tax use them too."""
    import json

    try:
        q = json.loads((adapter / "run_config.json").read_text(encoding="utf-8"))["model"]["quantization"]
    except (OSError, ValueError, KeyError, TypeError):
        return "none"
    return q if q in ("none", "nf4") else "none"


def urial_examples(lab: Path, out: Path) -> Path:
    """Three stylistic examples from the lab's *training* SFT data (answer, refuse, abstain), so URIAL
    sees the style but never the held-out entities; written out so the report shows what was used."""
    from lightalign.evaluation.systems import load_urial_examples

    path = out / "urial_examples.jsonl"
    write_jsonl(path, load_urial_examples(str(lab / "data" / "sft.jsonl")))
    return path


def lab_config(lab: Path, quick: bool = False):
    from lightalign.config import from_dict
    from lightalign.evaluation.config import EvalConfig

    lab = Path(lab)
    out = lab / "report"
    out.mkdir(parents=True, exist_ok=True)
    systems = [{"name": "base", "kind": "base"}]
    adapters = {name: lab / "adapters" / name for name in ("sft", "dpo")}
    ready = {name: str(p) for name, p in adapters.items() if adapter_ready(p)}
    for name, path in ready.items():
        systems.append({"name": f"base+{name}", "kind": "adapter", "adapter": path})
    aligner = lab / "aligner"
    if aligner_ready(aligner):
        systems.append({"name": "base+aligner", "kind": "aligner", "aligner": str(aligner)})
        if "dpo" in ready:
            systems.append({"name": "base+dpo+aligner", "kind": "adapter+aligner", "adapter": ready["dpo"],
                            "aligner": str(aligner)})
    # evaluate on the weights the adapters were trained on (4-bit in the lab); fp32 when there are none
    quantization = adapter_quantization(Path(ready.get("dpo") or next(iter(ready.values())))) if ready else "none"
    systems.append({"name": "urial", "kind": "urial", "urial_examples": str(urial_examples(lab, out))})
    data = {
        "title": "mini-lab: what alignment buys and costs",
        "base": {"path": str(lab / "base"), "quantization": quantization},
        "systems": systems,
        "dataset": {"name": "lab", "path": str(lab / "data" / "eval_prompts.jsonl"),
                    **({"limit": 160, "shuffle": True} if quick else {})},
        "judges": [{"kind": "lab", "world": str(lab / "data" / "world.json")}],
        "generation": {"max_new_tokens": 48, "batch_size": 64, "aligner_batch_size": 32},
        "tax": {"capability": str(lab / "data" / "capability.jsonl"),
                "aligner_eval": str(lab / "data" / "aligner_eval.jsonl"),
                **({"max_docs": 60, "max_triples": 160} if quick else {})},
        "output": str(out),
        "bootstrap": 1000,
    }
    return from_dict(EvalConfig, data, source=f"lab report for {lab}")


def run_lab_report(lab_dir: Path, quick: bool = False, log=print) -> dict:
    from lightalign.evaluation.runner import run_eval

    cfg = lab_config(Path(lab_dir), quick)
    if log:
        log(f"[report] systems: {', '.join(s.name for s in cfg.systems)}")
    return run_eval(cfg, log=log)
