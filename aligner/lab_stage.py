"""Mini-lab hooks for the Aligner (the lead wires them into `lightalign lab`).

train_lab_aligner(lab_dir)     full fine-tune of <lab>/base on <lab>/data/aligner.jsonl -> <lab>/aligner/
evaluate_lab_aligner(lab_dir)  base answers on the held-out prompts, judged before and after correction,
                               plus the do-no-harm rate on held-out answers that are already good
"""

from __future__ import annotations

import json
import time
from pathlib import Path

RECIPE = "minilab/aligner.yaml"


def lab_recipe_config(lab_dir: Path, quick: bool = False, overrides: list[str] | None = None):
    from lightalign.aligner.train import load_recipe
    from lightalign.train_cli import resolve_recipe

    lab = Path(lab_dir)
    over = [f"model.name_or_path={lab / 'base'}", f"data.path={lab / 'data' / 'aligner.jsonl'}",
            f"output_dir={lab / 'aligner'}"]
    if quick:  # a wiring check, not a model that meets the targets
        over += ["training.epochs=1", "identity.epochs=0.5"]
    return load_recipe(resolve_recipe(RECIPE), over + list(overrides or []))


def train_lab_aligner(lab_dir: str | Path, quick: bool = False) -> dict:
    """Train <lab>/aligner/ unless it is already complete; returns its training log."""
    from lightalign.aligner.train import train

    out = Path(lab_dir) / "aligner"
    log_file = out / "train_log.json"
    if log_file.exists():
        return {"skipped": True, **json.loads(log_file.read_text())}
    train(lab_recipe_config(Path(lab_dir), quick))
    return json.loads(log_file.read_text())


def load_lab_base(lab_dir: str | Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(lab_dir) / "base"
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(base)


def base_answers(lab_dir: str | Path, records: list[dict], batch_size: int = 64) -> list[str]:
    """The lab base's greedy answers to the eval prompts, cached in <lab>/aligner/base_answers.jsonl."""
    from lightalign.generation import generate_chat
    from lightalign.io import read_jsonl, write_jsonl

    cache = Path(lab_dir) / "aligner" / "base_answers.jsonl"
    if cache.exists():
        cached = {r["id"]: r["answer"] for r in read_jsonl(cache)}
        if all(r["id"] in cached for r in records):
            return [cached[r["id"]] for r in records]
    model, tokenizer = load_lab_base(lab_dir)
    answers = generate_chat(model, tokenizer, [r["prompt"] for r in records], max_new_tokens=64,
                            batch_size=batch_size)
    write_jsonl(cache, [{"id": r["id"], "prompt": r["prompt"], "answer": a} for r, a in zip(records, answers)])
    return answers


def evaluate_lab_aligner(lab_dir: str | Path, aligner=None, batch_size: int = 32) -> dict:
    """Judge scores of the base's answers and of their corrections, and the do-no-harm rate.

    Writes <lab>/aligner/eval.json and <lab>/aligner/eval_corrections.jsonl.
    """
    from lightalign.aligner.model import Aligner
    from lightalign.io import read_jsonl, write_json, write_jsonl
    from lightalign.lab.judges import Judge

    lab = Path(lab_dir)
    aligner = aligner or Aligner.from_pretrained(lab / "aligner")
    judge = Judge.from_file(lab / "data" / "world.json")
    records = read_jsonl(lab / "data" / "eval_prompts.jsonl")
    answers = base_answers(lab, records)
    good = [r for r in read_jsonl(lab / "data" / "aligner_eval.jsonl") if r["answer"] == r["correction"]]

    def run(copy_bias: float, copy_min_prob: float) -> tuple[dict, list]:
        aligner.copy_bias, aligner.copy_min_prob = copy_bias, copy_min_prob
        started = time.time()
        fixed = aligner.correct_batch([(r["prompt"], a) for r, a in zip(records, answers)], batch_size=batch_size)
        seconds = time.time() - started
        kept = aligner.correct_batch([(r["question"], r["answer"]) for r in good], batch_size=batch_size)
        return {
            "aligner": judge.summarize(records, [c.text for c in fixed]),
            "changed_rate": sum(c.changed for c in fixed) / len(fixed),
            "fallbacks": sum(c.fallback is not None for c in fixed),
            "corrections_per_second": len(fixed) / seconds if seconds else None,
            "do_no_harm": {"rate": sum(not c.changed for c in kept) / len(good) if good else None, "n": len(good),
                           "fallbacks": sum(c.fallback is not None for c in kept)},
            "copy_bias": copy_bias,
            "copy_min_prob": copy_min_prob,
        }, fixed

    configured = aligner.copy_bias, aligner.copy_min_prob
    result, fixed = run(*configured)
    result = {"base": judge.summarize(records, answers), **result, "template": aligner.template.name}
    if any(configured):  # the exact-greedy numbers beside the conservative ones: the trade-off in plain view
        result["greedy"], _ = run(0.0, 0.0)
        aligner.copy_bias, aligner.copy_min_prob = configured
    write_jsonl(lab / "aligner" / "eval_corrections.jsonl", [
        {"id": r["id"], "kind": r["kind"], "prompt": r["prompt"], "answer": a, "correction": c.text,
         "changed": c.changed, "fallback": c.fallback, "score_before": judge.score(r, a),
         "score_after": judge.score(r, c.text)} for r, a, c in zip(records, answers, fixed)])
    write_json(lab / "aligner" / "eval.json", result)
    return result
