"""The mini-lab's adapter stage: SFT, then DPO continuing from SFT, on the lab base loaded in 4-bit.

`train_lab_adapters(lab_dir)` runs recipes/minilab/{sft,dpo}.yaml with the lab's paths, saving
<lab>/adapters/sft and <lab>/adapters/dpo (PEFT adapters + metrics.json). A stage whose output is
complete for the same inputs (base, data, recipe) is skipped; a stage killed mid-way resumes from
its last complete checkpoint. `evaluate_adapter` scores one adapter with the lab's judges and
measures the alignment tax (held-out capability NLL) against the base.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from lightalign.io import read_jsonl, write_json

STAGES = ("sft", "dpo")
QUICK = ["training.max_steps=6", "training.logging_steps=2", "training.save_steps=3", "data.max_rows=192"]
# The full fine-tune baseline: same data and recipe, every weight trained, unquantized base.
FULL = {"sft": ["model.quantization=none", "lora.enabled=false", "training.lr=3e-4"],
        "dpo": ["model.quantization=none", "lora.enabled=false", "lora.init_from=null", "training.lr=5e-6"]}


def recipe_path(name: str) -> Path:
    import lightalign.recipes as recipes

    return Path(recipes.__file__).parent / "minilab" / f"{name}.yaml"


def _stage_key(path: Path) -> str | None:
    try:
        return json.loads((path / "stage.json").read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError):
        return None


def stage_overrides(lab: Path, stage: str, full: bool = False) -> list[str]:
    """Lab paths for a stage; `full`: the full fine-tune baseline in <lab>/adapters/full_<stage>."""
    name = f"full_{stage}" if full else stage
    base = lab / "adapters" / "full_sft" if (full and stage == "dpo") else lab / "base"
    common = [f"model.name_or_path={base}", f"output_dir={lab / 'adapters' / name}"] + (FULL[stage] if full else [])
    if stage == "sft":
        return common + [f"data.path={lab / 'data' / 'sft.jsonl'}"]
    common.append(f"data.path={lab / 'data' / 'preference.jsonl'}")
    return common if full else common + [f"lora.init_from={lab / 'adapters' / 'sft'}"]


def run_stage(lab: Path, stage: str, quick: bool = False, extra: list[str] = (), log=print,
              full: bool = False) -> dict:
    """Train one stage unless its output is complete for the same inputs; return its metrics."""
    from dataclasses import asdict

    from lightalign.adapters import runs

    overrides = stage_overrides(lab, stage, full) + (QUICK if quick else []) + list(extra)
    module, cfg = runs.load_recipe(recipe_path(stage), overrides)
    out = Path(cfg.output_dir)
    upstream = [_stage_key(lab / "base"), _stage_key(lab / "data")]
    if stage == "dpo":
        upstream.append(_stage_key(lab / "adapters" / ("full_sft" if full else "sft")))
    blob = json.dumps([stage, upstream, asdict(cfg)], sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    if _stage_key(out) == key and runs.is_complete(out):
        log(f"[adapters] {stage}: cached ({out})")
        return json.loads((out / runs.METRICS).read_text(encoding="utf-8"))
    if out.exists() and _stage_key(out) != key:
        shutil.rmtree(out)  # trained from other inputs: its checkpoints must not be resumed
    # the key is written first, so a run killed mid-way resumes its own checkpoints next time
    write_json(out / "stage.json", {"key": key})
    log(f"[adapters] {stage}: training {out}")
    module.train(cfg)
    return json.loads((out / runs.METRICS).read_text(encoding="utf-8"))


def train_lab_adapters(lab_dir: Path, quick: bool = False, evaluate: bool = True, log=print) -> dict:
    """SFT then DPO (reference = the SFT adapter) on <lab>/base in 4-bit; returns their metrics
    and, with `evaluate`, the judges' rates and the NLL tax of each adapter vs the base."""
    lab = Path(lab_dir)
    result = {stage: run_stage(lab, stage, quick, log=log) for stage in STAGES}
    if evaluate:
        result["scores"] = {stage: evaluate_adapter(lab, lab / "adapters" / stage, quick=quick, log=log)
                            for stage in STAGES}
        write_json(lab / "adapters" / "scores.json", result["scores"])
    return result


def full_finetune_baseline(lab_dir: Path, quick: bool = False, log=print) -> dict:
    """The same SFT then DPO data with every weight trained (unquantized base, no adapter), scored
    like the adapters: the comparison behind "light adapters keep more of the base's capability"."""
    lab = Path(lab_dir)
    result = {f"full_{stage}": run_stage(lab, stage, quick, log=log, full=True) for stage in STAGES}
    result["scores"] = {f"full_{stage}": evaluate_adapter(lab, lab / "adapters" / f"full_{stage}", quick=quick,
                                                          log=log) for stage in STAGES}
    write_json(lab / "adapters" / "full_scores.json", result["scores"])
    return result


def nll(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Mean per-token negative log-likelihood of documents (BOS text EOS), pads excluded."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in chunk]
            width = max(map(len, ids))
            input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, row in enumerate(ids):
                input_ids[i, :len(row)] = torch.tensor(row)
                mask[i, :len(row)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            keep = mask[:, 1:].bool()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            total += float(-(logp * keep).sum())
            count += int(keep.sum())
    return total / max(count, 1)


def _model_section(lab: Path, quantization: str = "nf4"):
    from lightalign.adapters.sections import ModelSection

    return ModelSection(name_or_path=str(lab / "base"), quantization=quantization)


def evaluate_model(lab: Path, model, tokenizer, system: str, records=None, log=print) -> dict:
    from lightalign.lab.judges import Judge
    from lightalign.lab.scores import judge_model

    records = records if records is not None else read_jsonl(lab / "data" / "eval_prompts.jsonl")
    judge = Judge.from_file(lab / "data" / "world.json")
    rates, replies = judge_model(model, tokenizer, judge, records)
    texts = [r["text"] for r in read_jsonl(lab / "data" / "capability.jsonl")]
    out = {"system": system, **{m: r["rate"] for m, r in rates.items()},
           "n": {m: r["n"] for m, r in rates.items()}, "capability_nll": nll(model, tokenizer, texts)}
    return out, replies


def evaluate_adapter(lab_dir: Path, adapter_dir: Path, quick: bool = False, log=print) -> dict:
    """Judge rates and NLL tax of base(4-bit)+adapter (or a full fine-tune's folder), beside the 4-bit
    and full-precision base."""
    from lightalign.adapters import loading

    lab, adapter_dir = Path(lab_dir), Path(adapter_dir)
    cached = adapter_dir / "scores.json"
    key = _stage_key(adapter_dir)
    if cached.exists():
        data = json.loads(cached.read_text(encoding="utf-8"))
        if data.get("key") == key and key is not None:
            return data
    records = read_jsonl(lab / "data" / "eval_prompts.jsonl")
    if quick:
        records = records[::10]  # every kind, a tenth of the prompts
    tokenizer = loading.load_tokenizer(str(lab / "base"))
    base_scores = base_reference(lab, tokenizer, records, quick)
    if (adapter_dir / "model.safetensors").exists():  # a full fine-tune: the whole model is the result
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(adapter_dir, use_safetensors=True).eval()
    else:
        model = loading.load_with_adapter(_model_section(lab), adapter_dir)
    scores, replies = evaluate_model(lab, model, tokenizer, adapter_dir.name, records)
    from lightalign.io import write_jsonl

    write_jsonl(adapter_dir / "replies.jsonl",
                [{"id": r["id"], "prompt": r["prompt"], "reply": a} for r, a in zip(records, replies)])
    result = {
        "key": key, "adapter": scores, **base_scores,
        "nll_tax_vs_base_4bit": scores["capability_nll"] / base_scores["base_4bit"]["capability_nll"] - 1,
        "nll_tax_vs_base_fp32": scores["capability_nll"] / base_scores["base_fp32"]["capability_nll"] - 1,
    }
    write_json(cached, result)
    rates = " ".join(f"{m} {scores[m]:.3f}" for m in ("helpful", "harmless", "honest") if scores[m] is not None)
    log(f"[adapters] {adapter_dir.name}: {rates} nll {scores['capability_nll']:.4f} "
        f"(tax {100 * result['nll_tax_vs_base_4bit']:+.2f}% vs the 4-bit base)")
    return result


def base_reference(lab: Path, tokenizer, records, quick: bool = False) -> dict:
    """The base's scores in the same table, full precision and 4-bit (cached beside the adapters)."""
    from lightalign.adapters import loading

    cached = lab / "adapters" / ("base_scores_quick.json" if quick else "base_scores.json")
    key = [_stage_key(lab / "base"), _stage_key(lab / "data"), len(records)]
    if cached.exists():
        data = json.loads(cached.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return {k: v for k, v in data.items() if k != "key"}
    out = {}
    for name, quant in (("base_fp32", "none"), ("base_4bit", "nf4")):
        model = loading.load_base(_model_section(lab, quant), training=False)
        out[name], _ = evaluate_model(lab, model, tokenizer, name, records)
    write_json(cached, {"key": key, **out})
    return out
