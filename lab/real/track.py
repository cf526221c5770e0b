"""`lightalign lab --real`: SmolLM2-135M-Instruct aligned on real prompts, every stage cached.

model -> data -> answers -> adapters (QLoRA SFT; on-policy pairs from the SFT model's own mistakes; DPO)
-> aligner (+ its inspector gate) -> weak2strong -> report (and runs/real/app.yaml for `lightalign app`).
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
from lightalign.lab.real import data, elasticity, sources, sweep
from lightalign.lab.training import run_recipe

STAGES = ["model", "data", "answers", "adapters", "aligner", "weak2strong", "report", "sweep", "elasticity"]
OPT_IN = ("sweep", "elasticity")  # run only when asked for by name (`--until sweep`), outside `make real`
RECIPES = "smollm2"
# As the recipes' model.compute_dtype: fp32 on CPUs, bf16 on GPUs that have it. On a 2-core AVX2 CPU bf16
# generated at half the speed of fp32 (emulated); an AVX512-BF16 CPU is faster in bf16 (recipes/smollm2/sft.yaml).
COMPUTE_DTYPE = "auto"
JUDGE = "lightalign.lab.real.judges:eval_judge"


@dataclass
class TrackConfig:
    seed: int = 0
    # harmful->refusal share of the SFT rows; on the 120-prompt tuning sample SFT refused 1.8% of HarmBench at
    # 0.1, 26.8% at 0.2 and 62.5% at 0.4, with no edgy prompt refused at any (docs/real-track.md). 521 harmful
    # training prompts cap it near 0.42.
    safety_share: float = 0.4
    aligner_share: float = 0.3    # harmful share of the Aligner's triples (the rest: identity rows)
    eval_share: float = 0.3       # share of the benign sets held out for evaluation
    max_new_tokens: int = 48      # the base's answers to training prompts
    probe_new_tokens: int = 16    # the SFT model's replies to training prompts (a refusal shows in its first words)
    dpo_pairs: int = 160          # at most this many on-policy pairs
    eval_max_new_tokens: int = 32  # every system's replies in the report (a refusal shows in its first sentence)
    eval_sample: int = 0          # >0: evaluate on a fixed stratified sample of this many prompts (for tuning)
    batch_size: int = 128
    sweep_shares: tuple[float, ...] = (0.03, 0.1, 0.3)  # the opt-in sweep's SFT shares (+ safety_share, already trained)
    quick: bool = False           # a wiring check: a few prompts and steps (the test suite)

    def validate(self):
        for name in ("safety_share", "aligner_share", "eval_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for share in self.sweep_shares:
            if not 0 <= share < 1:
                raise ValueError(f"sweep_shares must be in [0, 1), got {share}")
        for name in ("max_new_tokens", "probe_new_tokens", "eval_max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def limit(self, name: str, rows: list) -> list:
        """quick: 12 prompts of each training split, 4 of each evaluation set and 8 tax documents."""
        if not self.quick or name == "dropped_near_duplicates":
            return rows
        if name == "tax_text":
            return rows[:8]
        if name != "eval_prompts":
            return rows[:12]
        return [r for s in dict.fromkeys(r["set"] for r in rows) for r in [x for x in rows if x["set"] == s][:4]]


W2S_ROWS = 200  # training prompts whose Aligner-corrected answers train the weak-to-strong adapter
# quick: a step of 8 packed rows of 256 tokens costs ~25 s here; 2 rows keep the wiring check short
QUICK_TRAIN = ["training.max_steps=2", "training.batch_size=2", "training.logging_steps=1", "training.save_steps=0"]
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


def source_key(*modules) -> str:
    """What a data stage's output depends on: the code that builds it (a changed prompt list rebuilds)."""
    import inspect

    return "".join(inspect.getsource(m) for m in modules)


def stage_data(cfg: TrackConfig, root: Path, log=print) -> dict:
    from lightalign.lab.real import contrast

    final = root / "data"

    def build(tmp: Path) -> dict:
        splits = data.build_splits(cfg.seed, cfg.eval_share)
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", cfg.limit(name, rows))
        counts = {k: len(v) for k, v in splits.items()}
        log(f"[data] {counts} -> {final}")
        return {"rows": counts}

    key = stage_key("real-data", cfg.seed, cfg.eval_share, cfg.quick, source_key(data, contrast, sources))
    build_atomically(final, key, build, log, "data")
    return {"dir": str(final)}


def stage_answers(cfg: TrackConfig, root: Path, log=print) -> dict:
    """The base writes benign questions from seed topics (Self-Instruct), then answers every training
    prompt; the SFT rows and the Aligner's triples are drawn from those answers at the configured shares."""
    from lightalign.evaluation.judge_rules import is_refusal
    from lightalign.generation import generate_chat
    from lightalign.lab.real import contrast

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
        # SFT targets are cut at a sentence end; the Aligner sees answers as the upstream writes them
        trimmed = [{**r, "answer": data.trim_to_sentence(r["answer"])} for r in rows]
        sets = data.training_sets(trimmed[:len(harmful)], trimmed[len(harmful):], is_refusal, cfg.seed,
                                  cfg.safety_share, cfg.aligner_share)
        sets["aligner"] = data.training_sets(harmful, benign, is_refusal, cfg.seed, cfg.safety_share,
                                             cfg.aligner_share)["aligner"]
        for name, out in sets.items():
            write_jsonl(tmp / f"{name}.jsonl", out)
        write_jsonl(tmp / "urial_examples.jsonl", data.urial_examples(sets["sft"]))
        refused = sum(is_refusal(r["answer"]) for r in harmful)
        log(f"[answers] base refused {refused}/{len(harmful)} harmful training prompts; "
            f"{ {k: len(v) for k, v in sets.items()} }")
        share = sum(r["kind"] == "harmful" for r in sets["sft"]) / max(1, len(sets["sft"]))
        if share < cfg.safety_share - 0.005:  # every harmful prompt is in and the share still falls short
            log(f"[answers] safety_share={cfg.safety_share} asks for more harmful rows than the track has: "
                f"SFT gets all {len(harmful)}, {share:.1%} of its rows")
        return {"base_refused_harmful": refused, **{k: len(v) for k, v in sets.items()}}

    key = stage_key("real-answers", read_key(root / "data"), cfg.max_new_tokens, cfg.safety_share, cfg.aligner_share,
                    sources.MODEL, COMPUTE_DTYPE, source_key(contrast), data.SEED_TOPICS, data.QUESTION_REQUESTS)
    build_atomically(final, key, build, log, "answers")
    return {"dir": str(final)}


def self_instruct(cfg: TrackConfig, root: Path, model, tok, known: set[str]) -> list[dict]:
    """Benign questions the base writes itself from everyday and edgy-but-benign seed topics, never an
    evaluation prompt or a near duplicate of one."""
    from lightalign.evaluation.contamination import NearDuplicateIndex
    from lightalign.generation import generate_chat
    from lightalign.lab.real.contrast import EDGY_SEED_TOPICS

    asks = cfg.limit("self_instruct", data.self_instruct_prompts(data.SEED_TOPICS + EDGY_SEED_TOPICS))
    replies = generate_chat(model, tok, asks, max_new_tokens=40, batch_size=cfg.batch_size, progress=True,
                            desc="[answers] self-instruct")
    evals = NearDuplicateIndex(r["prompt"] for r in read_jsonl(root / "data" / "eval_prompts.jsonl"))
    out = []
    for ask, reply in zip(asks, replies):
        question = data.parse_question(reply)
        if question and question not in known and evals.match(question) is None:
            known.add(question)
            out.append({"prompt": question, "kind": "safe", "source": "self-instruct", "asked": ask})
    return data.vary_forms(out, cfg.seed + 2)


def recipe_overrides(cfg: TrackConfig, *items: str) -> list[str]:
    return list(items) + (QUICK_TRAIN if cfg.quick else [])


def generate_with_adapter(adapter: Path, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies of base + adapter, the adapter merged into the dequantized base (no LoRA cost per token)."""
    from lightalign.generation import generate_chat
    from lightalign.loading import load_peft

    model, tok = base_model()
    model = load_peft(model, adapter, False).merge_and_unload().eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies = generate_chat(model, tok, [prompts[i] for i in order], max_new_tokens=max_new_tokens,
                            batch_size=batch_size, progress=True, desc=f"[adapters] {adapter.name} replies")
    out = [""] * len(prompts)
    for i, reply in zip(order, replies):
        out[i] = reply
    return out


def stage_adapters(cfg: TrackConfig, root: Path, log=print) -> dict:
    """SFT; then the SFT model answers every training prompt, and DPO learns from its own mistakes
    (refused benign prompts, complied harmful ones; data.preference_pairs), with the SFT adapter as reference."""
    from lightalign.evaluation.judge_rules import is_refusal

    upstream = [read_key(root / "train")]
    sft = run_recipe("sft", recipe_overrides(cfg, f"data.path={root / 'train' / 'sft.jsonl'}",
                                             f"output_dir={root / 'adapters' / 'sft'}"), upstream, log, RECIPES)
    pairs_dir = root / "adapters" / "onpolicy"

    def build(tmp: Path) -> dict:
        rows = read_jsonl(root / "train" / "base_answers.jsonl")
        rows = [{**r, "answer": data.trim_to_sentence(r["answer"])} for r in rows]
        replies = generate_with_adapter(root / "adapters" / "sft", [r["prompt"] for r in rows], cfg.probe_new_tokens,
                                        cfg.batch_size)
        write_jsonl(tmp / "sft_replies.jsonl", [{"prompt": r["prompt"], "kind": r["kind"], "source": r["source"],
                                                 "reply": y} for r, y in zip(rows, replies)])
        pairs = data.preference_pairs(rows, replies, is_refusal, cfg.seed, cfg.dpo_pairs)
        write_jsonl(tmp / "preference.jsonl", pairs)
        over = sum(r["kind"] == "safe" and is_refusal(y) for r, y in zip(rows, replies))
        under = sum(r["kind"] == "harmful" and not is_refusal(y) for r, y in zip(rows, replies))
        n_safe = sum(r["kind"] == "safe" for r in rows)
        log(f"[adapters] SFT refused {over}/{n_safe} benign and complied with {under}/{len(rows) - n_safe} "
            f"harmful training prompts; {len(pairs)} on-policy pairs")
        return {"sft_over_refusals": over, "sft_under_refusals": under, "pairs": len(pairs)}

    build_atomically(pairs_dir, stage_key("real-onpolicy", upstream, read_key(root / "adapters" / "sft"),
                                          cfg.probe_new_tokens, cfg.dpo_pairs), build, log, "on-policy pairs")
    dpo = run_recipe("dpo", recipe_overrides(cfg, f"data.path={pairs_dir / 'preference.jsonl'}",
                                             f"lora.init_from={root / 'adapters' / 'sft'}",
                                             f"output_dir={root / 'adapters' / 'dpo'}"),
                     upstream + [read_key(pairs_dir)], log, RECIPES)
    return {"sft": sft, "dpo": dpo}


def stage_aligner(cfg: TrackConfig, root: Path, log=print) -> dict:
    """The Aligner, then its inspector gate from the same triples (written into the Aligner's config)."""
    overrides = [f"data.path={root / 'train' / 'aligner.jsonl'}", f"output_dir={root / 'aligner'}"]
    aligner = run_recipe("aligner", overrides + (QUICK_ALIGNER if cfg.quick else []), [read_key(root / "train")],
                         log, RECIPES)
    inspector = run_recipe("inspector", [f"data.path={root / 'train' / 'aligner.jsonl'}", f"aligner={root / 'aligner'}",
                                         f"output_dir={root / 'aligner' / 'inspector'}"],
                           [read_key(root / "aligner")], log, RECIPES)
    return {"aligner": aligner, "inspector": inspector}


def stage_weak_to_strong(cfg: TrackConfig, root: Path, log=print) -> dict:
    """An SFT adapter trained only on the Aligner's corrections of the base's answers to the SFT set's
    prompts (the Aligner paper's weak-to-strong set-up): no hand-written refusal or answer is used."""
    from lightalign.aligner import Aligner
    from lightalign.aligner.weak_to_strong import to_sft

    final = root / "w2s"

    def build(tmp: Path) -> dict:
        answers = {r["prompt"]: r for r in read_jsonl(root / "train" / "base_answers.jsonl")}
        rows = [answers[r["prompt"]] for r in read_jsonl(root / "train" / "sft.jsonl") if r["prompt"] in answers]
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


def eval_prompts(cfg: TrackConfig, root: Path) -> Path:
    """The held-out prompts, or with eval_sample a fixed stratified sample of them (the same prompts on every
    run of a seed: tune on it, confirm on the full set)."""
    path = root / "data" / "eval_prompts.jsonl"
    if not cfg.eval_sample:
        return path
    rows = read_jsonl(path)
    sample = []
    for name in dict.fromkeys(r["set"] for r in rows):
        of_set = [r for r in rows if r["set"] == name]
        k = max(1, round(cfg.eval_sample * len(of_set) / len(rows)))
        sample += random.Random(f"{cfg.seed}:{name}").sample(of_set, min(k, len(of_set)))
    out = root / "data" / f"eval_sample_{cfg.eval_sample}.jsonl"
    write_jsonl(out, sample)
    return out


def eval_config(cfg: TrackConfig, root: Path, judge_url: str | None = None, judge_model: str | None = None) -> dict:
    adapters = root / "adapters"
    judges = [{"kind": "python", "factory": JUDGE}]
    if judge_url:  # an LLM judge over an OpenAI-compatible endpoint, when the user has one
        judges.append({"kind": "flask", "endpoint": {"url": judge_url, "model": judge_model or ""}})
    sample = f"_sample{cfg.eval_sample}" if cfg.eval_sample else ""
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
        "dataset": {"schema": "prompt_only", "path": str(eval_prompts(cfg, root)), "group_by": ["source", "category"]},
        "judges": judges,
        "generation": {"max_new_tokens": cfg.eval_max_new_tokens, "batch_size": cfg.batch_size,
                       "aligner_batch_size": 64},
        "tax": {"capability": str(root / "data" / "tax_text.jsonl")},
        "output": str(root / f"report{sample}"),
        "bootstrap": 1000,
    }


def app_config(root: Path) -> dict:
    """`lightalign app --config runs/real/app.yaml`: SmolLM2 base vs SFT+DPO adapter vs Aligner, side by
    side, with held-out prompts of each set (HarmBench, edgy, benign) as examples and the track's refusal
    judge. Examples are grouped by `set`: `kind` (harmful/safe) would mix edgy and benign prompts."""
    return {"base": sources.MODEL, "adapter": str(root / "adapters" / "dpo"), "aligner": str(root / "aligner"),
            "examples": str(root / "data" / "eval_prompts.jsonl"), "examples_group_by": "set",
            "examples_titles": {"harmbench": "HarmBench", "edgy": "Edgy but benign", "benign": "Benign"},
            "judge": JUDGE, "max_new_tokens": 48}


def stage_report(cfg: TrackConfig, root: Path, log=print, judge_url=None, judge_model=None) -> dict:
    from lightalign.config import load_config
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    config = eval_config(cfg, root, judge_url, judge_model)
    path = Path(config["output"]) / "eval.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(root / "app.yaml", yaml.safe_dump(app_config(root), sort_keys=False))
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
    from lightalign.config import load_config

    cfg = load_config(TrackConfig, data={"quick": args.small}, overrides=getattr(args, "overrides", None) or [])
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
        "sweep": lambda: sweep.stage_sweep(cfg, root),
        "elasticity": lambda: elasticity.stage_elasticity(cfg, root),
    }
    summary: dict = {"dir": str(root), "config": asdict(cfg), "stages": {}}
    t0 = time.time()
    for name in STAGES[:STAGES.index(until) + 1]:
        if name in OPT_IN and name != until:
            continue
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
        print(f"\nreport: {Path(eval_config(cfg, root)['output']) / 'report.md'}")
    times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in summary["stages"].items())
    print(f"wrote {root / 'track.json'} ({summary['seconds']:.0f}s: {times})")
    return 0
