"""`lightalign elasticity CONFIG.yaml`: does the alignment survive the next fine-tune?

An aligned system (a PEFT adapter on a base, or a whole model folder) is fine-tuned further on a
*reverse* set, the way a user fine-tunes it for their own task: `benign` (ordinary requests answered
without refusals), `harmful` (harmful requests answered compliantly, the attack of Qi et al. 2023) or
`file` (the user's own prompt/completion rows). One SFT run per system goes once over the largest
size, rows in file order, and saves the model each time it has seen `sizes[i]` rows, so every point is
a prefix of the same run (not a separate run). Every point is then scored by `lightalign eval`
(evaluation.runner.run_eval: its systems, judges, bootstrap intervals and the NLL of the capability
text), alone and behind the config's Aligner when it names one.

Output folder:
    reverse/rows.jsonl       the reverse set in the order it is trained (prompt, completion)
    train/<system>-<key>/    the training run (resumable) and points/rows-N/ (the model after N rows)
    eval/<label>/            one `lightalign eval` run per group of points (report.json, cache.jsonl)
    elasticity.json          curves: every metric and the NLL distance to the base against reverse rows,
                             and the rows it takes to lose half the gain, per system and metric
    elasticity.png           the curves with their 95% intervals
    elasticity.md            the same as tables

Everything is cached: the reverse set and the evals by a key over their inputs (weights fingerprinted
by size and mtime), the training runs by a key over the validated recipe, the rows and the sizes (a
killed run resumes from its last committed checkpoint). A second run with nothing changed trains and
generates nothing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lightalign.errors import UserError
from lightalign.evaluation.config import Dataset, Generation, Judge, Tax, check_min, check_systems
from lightalign.io import make_dir, read_jsonl, write_json, write_jsonl
from lightalign.loading import adapter_base_name

POINT_FILE = "point.json"  # written last into a saved point: its presence marks it complete
STAMP_FILE = "elasticity_stamp.json"
ALIGNER_SUFFIX = " -> aligner"


@dataclass
class AlignedSystem:
    """One aligned system to fine-tune further: `adapter` (a PEFT adapter on `base`: the same LoRA is
    trained further) or `model` (a whole model folder: every weight trained, `finetune: full`, or a new
    LoRA on it, `finetune: lora`)."""
    name: str
    adapter: str | None = None
    model: str | None = None
    finetune: Literal["lora", "full"] | None = None  # default: lora for an adapter, full for a model
    recipe_overrides: list[str] = field(default_factory=list)  # after the config's, e.g. a full fine-tune's lr

    def check(self, i: int) -> None:
        where = f"systems[{i}] ({self.name})"
        if not self.name.strip() or "/" in self.name or self.name != self.name.strip():
            raise ValueError(f"systems[{i}].name must be a non-empty name without '/', got {self.name!r}")
        if bool(self.adapter) == bool(self.model):
            raise ValueError(f"{where}: set exactly one of 'adapter' (a PEFT adapter folder) or 'model' "
                             "(a whole model folder)")
        if self.adapter and self.finetune == "full":
            raise ValueError(f"{where}: finetune 'full' is for a 'model'; an adapter is trained further as LoRA")
        if self.finetune is None:
            self.finetune = "lora" if self.adapter else "full"


@dataclass
class Reverse:
    """The rows the aligned systems are fine-tuned on. Rows with a completion are used as they are; rows
    with a prompt only are answered by the base model itself (greedy), and for `benign` and `harmful`
    answers that refuse (evaluation.judge_rules.is_refusal) are dropped: the set carries no refusals."""
    kind: Literal["benign", "harmful", "file"]
    path: str = ""
    max_new_tokens: int = 64   # the base's answers to prompt-only rows
    batch_size: int = 16

    def validate(self) -> None:
        if not self.path:
            raise ValueError(f"reverse.path is required (a JSONL of prompts, or of prompt/completion rows for "
                             f"kind {self.kind!r})")
        check_min(self, "reverse.", max_new_tokens=1, batch_size=1)


@dataclass
class EvalSection:
    """How every point is scored: the fields of a `lightalign eval` config (see evaluation.config)."""
    dataset: Dataset
    judges: list[Judge]
    generation: Generation = field(default_factory=Generation)
    tax: Tax = field(default_factory=Tax)  # tax.capability: the text whose NLL measures the distance to the base
    bootstrap: int = 1000
    dequantize: bool = False   # as the eval's base.dequantize (nf4 bases)
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"

    def validate(self) -> None:
        if not self.judges:
            raise ValueError("eval.judges must list at least one judge")
        for i, j in enumerate(self.judges):
            j.check(i)
            if j.kind == "pairwise":
                raise ValueError(f"eval.judges[{i}]: pairwise judges compare systems of one eval; elasticity "
                                 "curves use rule, reward and FLASK judges")
        if not self.dataset.path:
            raise ValueError("eval.dataset.path is required (the prompts every point is scored on)")
        check_min(self, "eval.", bootstrap=0)


@dataclass
class ElasticityConfig:
    base: str                       # the base model before alignment: the reference for gains and NLL distance
    systems: list[AlignedSystem]
    reverse: Reverse
    eval: EvalSection
    recipe: str = "minilab/sft"     # the SFT recipe (path or installed name) the reverse fine-tune runs
    recipe_overrides: list[str] = field(default_factory=list)  # its key=value overrides (training.lr=1e-4, ...)
    aligner: str | None = None      # an Aligner folder: every point is also scored behind it
    sizes: list[int] = field(default_factory=lambda: [10, 30, 100, 300])
    output: str = "runs/elasticity"
    seed: int = 0
    progress: bool = True
    title: str = "Elasticity: does the alignment survive the next fine-tune?"

    def validate(self) -> None:
        if not self.base.strip():
            raise ValueError("base must name the base model (folder, pkg: file or hub id)")
        check_systems(self.systems, "'systems' must list at least one aligned system (adapter or model)")
        if not self.sizes:
            raise ValueError("sizes must list at least one number of reverse rows, e.g. [10, 30, 100, 300]")
        bad = [n for n in self.sizes if n < 1]
        if bad:
            raise ValueError(f"sizes must be >= 1 (rows of the reverse set), got {bad[0]}")
        if sorted(set(self.sizes)) != list(self.sizes):
            raise ValueError(f"sizes must increase strictly, got {self.sizes}")
        if self.aligner is not None and not self.aligner.strip():
            raise ValueError("aligner must name an Aligner folder, or be left out")


# ---- the half-gain figure ------------------------------------------------------------------------

def rows_to_lose_half(points: list[tuple[int, float | None]], base: float | None, min_gain: float = 1e-9) -> dict:
    """How many reverse rows it takes to lose half of what alignment gained on one metric.

    `points`: (rows, value) with rows 0 the aligned system before any reverse fine-tuning; `base`: the
    base model's value. gain = value at 0 rows - base; the threshold is base + gain / 2. The answer is
    the first crossing of the threshold, interpolated linearly between the two points around it:
    {"gain", "threshold", "rows" (None when not crossed), "status": "lost" | "kept" | "no gain"}
    ("kept": still more than half the gain at the largest size)."""
    pts = sorted((r, v) for r, v in points if v is not None)
    start = next((v for r, v in pts if r == 0), None)
    if start is None or base is None or abs(start - base) <= min_gain:
        return {"gain": None if start is None or base is None else start - base, "threshold": None,
                "rows": None, "status": "no gain"}
    gain = start - base
    threshold = base + gain / 2
    sign = 1.0 if gain > 0 else -1.0
    prev_r, prev_v = pts[0]
    for r, v in pts[1:]:
        if (v - threshold) * sign <= 0:
            span = prev_v - v
            frac = (prev_v - threshold) / span if span else 1.0
            return {"gain": gain, "threshold": threshold, "rows": prev_r + frac * (r - prev_r), "status": "lost"}
        prev_r, prev_v = r, v
    return {"gain": gain, "threshold": threshold, "rows": None, "status": "kept"}


# ---- the reverse set -----------------------------------------------------------------------------

def _fingerprint(path) -> dict:
    """A data file by its content (rewriting the same rows keeps the caches); a weights folder by its
    files' sizes and mtimes (evaluation.cache.file_fingerprint)."""
    import hashlib

    from lightalign.evaluation.cache import file_fingerprint

    if not path:
        return {}
    if Path(path).is_file():
        return {"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return file_fingerprint(path)


def _stamp_ok(folder: Path, key: str) -> bool:
    try:
        return json.loads((folder / STAMP_FILE).read_text(encoding="utf-8")).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


def _read_reverse(path: str) -> tuple[list[tuple[str, str | None]], dict]:
    """(prompt, completion or None) per row of the reverse file, in file order."""
    from lightalign import schemas

    try:
        rows, stats = schemas.load(path, "auto", "sft", where="reverse.path")
        return [(schemas.last_user_text(r["prompt"]), r["completion"][-1]["content"]) for r in rows], stats
    except UserError:  # prompt-only rows (or no completions): the base answers them
        rows, stats = schemas.load(path, "auto", "prompts", where="reverse.path")
        return [(r["prompt"], None) for r in rows], stats


def build_reverse(cfg: ElasticityConfig, out: Path, log=print) -> tuple[Path, dict]:
    """<out>/reverse/rows.jsonl: the first max(sizes) usable rows of the reverse set, answered by the base
    where the file gives no completion. Cached by a key over the file, the base and the settings."""
    from lightalign.evaluation.cache import cache_key
    from lightalign.evaluation.judge_rules import is_refusal

    r = cfg.reverse
    folder = out / "reverse"
    need = max(cfg.sizes)
    key = cache_key(stage="reverse", reverse=asdict(r), file=_fingerprint(r.path), base=cfg.base,
                    base_fp=_fingerprint(cfg.base) if Path(cfg.base).exists() else {}, rows=need)
    if _stamp_ok(folder, key) and (folder / "rows.jsonl").exists():
        info = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))["info"]
        log(f"[elasticity] reverse set cached: {folder / 'rows.jsonl'} ({info['rows']} rows)")
        return folder / "rows.jsonl", info
    pairs, stats = _read_reverse(r.path)
    todo = [i for i, (_, c) in enumerate(pairs) if c is None]
    answered = 0
    if todo:
        from lightalign.generation import generate_chat
        from lightalign.loading import load_for_inference

        log(f"[elasticity] the base answers {len(todo)} prompts of {r.path}")
        model, tok = load_for_inference(cfg.base)
        texts = generate_chat(model.eval(), tok, [pairs[i][0] for i in todo], max_new_tokens=r.max_new_tokens,
                              batch_size=r.batch_size, progress=cfg.progress, desc="reverse set")
        for i, t in zip(todo, texts):
            pairs[i] = (pairs[i][0], t)
        answered = len(todo)
        del model
    kept, refusals, empty = [], 0, 0
    for prompt, completion in pairs:
        if not (completion or "").strip():
            empty += 1
        elif r.kind != "file" and is_refusal(completion):
            refusals += 1
        else:
            kept.append({"prompt": prompt, "completion": completion})
        if len(kept) == need:
            break
    if len(kept) < need:
        raise UserError(f"reverse.path: {r.path} gives {len(kept)} usable rows ({refusals} refusals and {empty} "
                        f"empty answers dropped), sizes need {need}: lower the largest of sizes or add rows")
    info = {"kind": r.kind, "path": r.path, "rows": len(kept), "answered_by_base": answered,
            "dropped_refusals": refusals, "dropped_empty": empty, "read": stats.get("rows")}
    make_dir(folder, "the reverse set's folder")
    write_jsonl(folder / "rows.jsonl", kept)
    write_json(folder / STAMP_FILE, {"key": key, "info": info})
    log(f"[elasticity] reverse set: {len(kept)} rows ({r.kind}; {refusals} refusals dropped) -> {folder / 'rows.jsonl'}")
    return folder / "rows.jsonl", info


# ---- training: one run per system, saved at each size --------------------------------------------

def point_dir(run_dir: Path, rows: int) -> Path:
    return Path(run_dir) / "points" / f"rows-{rows}"


def point_done(folder: Path) -> bool:
    return (Path(folder) / POINT_FILE).exists()


def recipe_for(cfg: ElasticityConfig, system: AlignedSystem, rows_path: Path, run_dir: Path | None = None):
    """The SFT recipe of the reverse fine-tune of `system`: the config's recipe and overrides, one pass over
    max(sizes) rows at a constant learning rate (unless the overrides say otherwise), with the model,
    data and output fixed by the system."""
    from lightalign.config import read_yaml
    from lightalign.training import load_recipe, resolve_recipe

    method = read_yaml(resolve_recipe(cfg.recipe)).get("method")
    if method != "sft":
        raise UserError(f"recipe: {cfg.recipe} is a {method!r} recipe; the reverse fine-tune runs an "
                        "'sft' recipe (e.g. minilab/sft)")
    first = ["training.scheduler=constant", "training.warmup_ratio=0.0"]
    fixed = [f"data.path={rows_path}", "data.schema=prompt_completion", "data.hub_id=null",
             f"data.max_rows={max(cfg.sizes)}", "training.epochs=1", "training.max_steps=-1",
             "sft.packing=false", f"output_dir={run_dir or 'unset'}"]
    if system.adapter:
        fixed += [f"model.name_or_path={cfg.base}", f"lora.init_from={system.adapter}", "lora.enabled=true"]
    elif system.finetune == "full":
        fixed += [f"model.name_or_path={system.model}", "model.quantization=none", "lora.enabled=false",
                  "lora.init_from=null"]
    else:
        fixed += [f"model.name_or_path={system.model}", "lora.init_from=null", "lora.enabled=true"]
    recipe = load_recipe(cfg.recipe, first + list(cfg.recipe_overrides) + list(system.recipe_overrides) + fixed)
    t = recipe.config.training
    batch = t.batch_size * t.grad_accum
    off = [n for n in cfg.sizes if n % batch]
    if off:
        raise UserError(f"sizes: {off[0]} is not a multiple of the training batch ({t.batch_size} x grad_accum "
                        f"{t.grad_accum} = {batch} rows per step): pick sizes that are, or another "
                        "training.batch_size in recipe_overrides")
    return recipe


def _save_points_callback(sizes: list[int], run_dir: Path, batch: int, base_name: str | None):
    """A Trainer callback that saves the model (adapter or whole model, safetensors, + tokenizer) into
    points/rows-N once the run has taken the steps that cover N rows; a point already saved is kept."""
    from transformers import TrainerCallback

    from lightalign.training import distributed, runs

    at = {n // batch: n for n in sizes}

    class SavePoints(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            rows = at.get(state.global_step)
            if rows is None or point_done(point_dir(run_dir, rows)) or not distributed.is_main():
                return
            final = point_dir(run_dir, rows)
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            runs.save_model(model, processing_class, tmp, base_name)
            write_json(tmp / POINT_FILE, {"rows": rows, "step": state.global_step})
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)

    return SavePoints()


def train_points(cfg: ElasticityConfig, system: AlignedSystem, rows_path: Path, out: Path, log=print) -> dict[int, Path]:
    """Fine-tune `system` once over the reverse rows in order; returns {rows: model or adapter folder},
    0 being the aligned system itself."""
    from lightalign.evaluation.cache import cache_key
    from lightalign.training.runs import is_complete

    probe = recipe_for(cfg, system, rows_path)
    settings = {k: v for k, v in asdict(probe.config).items() if k != "output_dir"}
    key = cache_key(stage="reverse-train", recipe=settings, rows=_fingerprint(rows_path), sizes=cfg.sizes,
                    aligned=_fingerprint(system.adapter or system.model))[:10]
    run_dir = out / "train" / f"{system.name}-{key}"
    points = {n: point_dir(run_dir, n) for n in cfg.sizes}
    if all(point_done(p) for p in points.values()):
        log(f"[elasticity] {system.name}: cached run {run_dir}")
    else:
        if is_complete(run_dir):  # finished, but a point was removed since: train again
            shutil.rmtree(run_dir)
        recipe = recipe_for(cfg, system, rows_path, run_dir)
        t = recipe.config.training
        batch = t.batch_size * t.grad_accum
        base_name = cfg.base if system.adapter else (system.model if system.finetune == "lora" else None)
        log(f"[elasticity] {system.name}: fine-tuning ({system.finetune}) on {max(cfg.sizes)} reverse rows, "
            f"saving at {', '.join(map(str, cfg.sizes))} -> {run_dir}")
        recipe.train(callbacks=[_save_points_callback(cfg.sizes, run_dir, batch, base_name)], in_order=True)
        missing = [n for n, p in points.items() if not point_done(p)]
        if missing:
            raise UserError(f"{run_dir}: the run finished without the points at {missing} rows "
                            "(delete the folder and run again)")
    return {0: Path(system.adapter or system.model), **points}


# ---- scoring every point through `lightalign eval` -----------------------------------------------

def _eval_data(cfg: ElasticityConfig, label: str, base: str, quantization: str, systems: list[dict], out: Path) -> dict:
    e = cfg.eval
    return {"title": f"elasticity: {label}",
            "base": {"path": base, "quantization": quantization, "dequantize": e.dequantize and quantization == "nf4",
                     "compute_dtype": e.compute_dtype},
            "systems": systems, "dataset": asdict(e.dataset), "judges": [asdict(j) for j in e.judges],
            "generation": asdict(e.generation), "tax": asdict(e.tax), "output": str(out / "eval" / label),
            "bootstrap": e.bootstrap, "seed": cfg.seed, "progress": cfg.progress}


def run_point_eval(data: dict, weights: list, log=print) -> dict:
    """run_eval on `data` unless its folder holds a report of the same config and weights."""
    from lightalign.config import from_dict
    from lightalign.evaluation.cache import cache_key
    from lightalign.evaluation.config import EvalConfig
    from lightalign.evaluation.runner import run_eval

    folder = Path(data["output"])
    key = cache_key(stage="elasticity-eval", data=data,
                    weights={str(w): _fingerprint(w) for w in weights if w and Path(w).exists()},
                    files={k: _fingerprint(data[s][k]) for s, k in (("dataset", "path"), ("tax", "capability"))
                           if data[s].get(k) and Path(data[s][k]).exists()})
    if _stamp_ok(folder, key) and (folder / "report.json").exists():
        log(f"[elasticity] eval cached: {folder}")
        return json.loads((folder / "report.json").read_text(encoding="utf-8"))
    report = run_eval(from_dict(EvalConfig, data, source=f"elasticity eval {folder.name}"), log=log)
    write_json(folder / STAMP_FILE, {"key": key})
    return report


def _metric(report: dict, name: str) -> dict:
    return {k: c for k, c in report["systems"][name]["metrics"].items() if c.get("mean") is not None}


def run_elasticity(cfg: ElasticityConfig, log=print) -> dict:
    """Build the reverse set, fine-tune every system once (saving each size), score every point, write
    elasticity.json / .png / .md; returns the result (see write_outputs)."""
    out = make_dir(cfg.output, "the output folder (output)")
    say = log or (lambda _m: None)
    aligner = cfg.aligner
    if aligner and not Path(aligner).exists():
        raise UserError(f"aligner: {aligner}: no such Aligner folder")
    for i, s in enumerate(cfg.systems):
        if not Path(s.adapter or s.model).exists():
            raise UserError(f"systems[{i}].{'adapter' if s.adapter else 'model'}: {s.adapter or s.model}: no such folder")
        named = adapter_base_name(s.adapter) if s.adapter else None
        if named and Path(named).exists() and Path(cfg.base).exists() \
                and Path(named).resolve() != Path(cfg.base).resolve():
            raise UserError(f"systems[{i}].adapter: {s.adapter} was trained on {named}, not on base {cfg.base}")
    # sizes vs batch and the recipe's method, before any model loads; the adapters' quantization
    probe = recipe_for(cfg, next((s for s in cfg.systems if s.adapter), cfg.systems[0]), Path("unset"))
    rows_path, reverse_info = build_reverse(cfg, out, say)
    trained = {s.name: train_points(cfg, s, rows_path, out, say) for s in cfg.systems}
    sizes = [0, *cfg.sizes]
    adapter_q = probe.config.model.quantization

    references: dict[str, dict] = {}

    def reference(q: str) -> dict:
        """The base alone (and behind the Aligner), as the systems at quantization `q` see it."""
        if q not in references:
            systems = [{"name": "base", "kind": "base"}]
            if aligner:
                systems.append({"name": "base" + ALIGNER_SUFFIX, "kind": "aligner", "aligner": aligner})
            data = _eval_data(cfg, f"base-{q}", cfg.base, q, systems, out)
            references[q] = run_point_eval(data, [cfg.base, aligner], say)
        return references[q]

    series: dict[str, dict] = {}
    for s in cfg.systems:
        folders = trained[s.name]
        names = {n: f"{s.name}@{n}" for n in sizes}
        curves = {s.name: [], s.name + ALIGNER_SUFFIX: []} if aligner else {s.name: []}
        if s.adapter:  # every point is an adapter on the same base: one eval holds them all
            q = adapter_q
            ref = reference(q)
            systems = []
            for n in sizes:
                systems.append({"name": names[n], "kind": "adapter", "adapter": str(folders[n])})
                if aligner:
                    systems.append({"name": names[n] + ALIGNER_SUFFIX, "kind": "adapter+aligner",
                                    "adapter": str(folders[n]), "aligner": aligner})
            report = run_point_eval(_eval_data(cfg, s.name, cfg.base, q, systems, out),
                                    [cfg.base, aligner, *folders.values()], say)
            reports = {n: report for n in sizes}
        else:  # a whole model per point (or a new adapter on the model): one eval per point
            q = "none"
            ref = reference(q)
            reports = {}
            for n in sizes:
                lora = s.finetune == "lora" and n > 0
                base = s.model if lora else str(folders[n])
                systems = [{"name": names[n], "kind": "adapter" if lora else "base",
                            **({"adapter": str(folders[n])} if lora else {})}]
                if aligner:
                    systems.append({"name": names[n] + ALIGNER_SUFFIX, "kind": "adapter+aligner" if lora else "aligner",
                                    "aligner": aligner, **({"adapter": str(folders[n])} if lora else {})})
                reports[n] = run_point_eval(_eval_data(cfg, f"{s.name}@{n}", base, q, systems, out),
                                            [base, aligner, folders[n]], say)
        base_nll = ((ref.get("tax") or {}).get("base") or {}).get("nll")
        for n in sizes:
            report = reports[n]
            tax = report.get("tax") or {}
            for label in curves:
                name = names[n] + (ALIGNER_SUFFIX if label.endswith(ALIGNER_SUFFIX) else "")
                point = {"rows": n, "metrics": _metric(report, name)}
                if "aligner_edits" in report["systems"][name]:
                    point["aligner_edit_rate"] = report["systems"][name]["aligner_edits"]["edit_rate"]
                nll = _point_nll(tax, names[n], paired=bool(s.adapter))
                if nll is not None and base_nll is not None:
                    point["nll"] = nll["nll"]
                    point["nll_distance"] = {"mean": nll["nll"] - base_nll, "lo": nll.get("lo"), "hi": nll.get("hi"),
                                             "relative": (nll["nll"] - base_nll) / base_nll if base_nll else None}
                curves[label].append(point)
        ref_metrics = _metric(ref, "base")
        for label, points in curves.items():
            # the gain of every curve is counted from the base alone: behind the Aligner, what alignment and
            # the Aligner gained together, and how much of it the Aligner keeps as the upstream drifts
            metrics = sorted({m for p in points for m in p["metrics"]})
            half = {m: rows_to_lose_half([(p["rows"], (p["metrics"].get(m) or {}).get("mean")) for p in points],
                                         (ref_metrics.get(m) or {}).get("mean")) for m in metrics}
            behind = label.endswith(ALIGNER_SUFFIX)
            series[label] = {"system": s.name, "aligner": behind, "finetune": s.finetune,
                             "from": s.adapter or s.model, "quantization": q, "points": points,
                             "base": {"metrics": ref_metrics, "nll": base_nll,
                                      **({"behind_aligner": _metric(ref, "base" + ALIGNER_SUFFIX)} if behind else {})},
                             "half_gain": half}
    result = {"title": cfg.title, "sizes": sizes, "reverse": reverse_info, "base": cfg.base, "aligner": aligner,
              "recipe": cfg.recipe, "recipe_overrides": cfg.recipe_overrides,
              "training_runs": {s.name: str(trained[s.name][cfg.sizes[0]].parent.parent) for s in cfg.systems},
              "series": series}
    paths = write_outputs(result, out)
    say(f"[elasticity] wrote {', '.join(str(p) for p in paths)}")
    return result


def _point_nll(tax: dict, name: str, paired: bool) -> dict | None:
    """The point's per-token NLL of the capability text; `paired` (an adapter on the config's base): also
    the eval's paired interval of its distance to that base (the eval loads the same base as the
    reference eval)."""
    if name in tax:  # an adapter system: measured beside its eval's base, paired over documents
        t = tax[name]
        return {"nll": t["nll"], **({"lo": t.get("delta_lo"), "hi": t.get("delta_hi")} if paired else {})}
    base = tax.get("base")  # a whole model: the eval's base is the point itself
    return {"nll": base["nll"]} if base and base.get("nll") is not None else None


# ---- outputs ---------------------------------------------------------------------------------------

def _fmt_rows(h: dict, largest: int) -> str:
    if h["status"] == "lost":
        return f"{h['rows']:.0f}"
    return f"> {largest}" if h["status"] == "kept" else "no gain"


def summary_rows(result: dict) -> list[dict]:
    """One row per curve: each metric at 0 rows and at the largest size, the rows to lose half its gain,
    and the NLL distance to the base at the largest size."""
    rows = []
    largest = result["sizes"][-1]
    for label, s in result["series"].items():
        first, last = s["points"][0], s["points"][-1]
        row = {"system": label}
        for m, h in s["half_gain"].items():
            a, b = (first["metrics"].get(m) or {}).get("mean"), (last["metrics"].get(m) or {}).get("mean")
            row[m] = f"{_pct(a)} -> {_pct(b)} (half lost at {_fmt_rows(h, largest)})"
        if "nll_distance" in last:
            row["nll distance"] = f"{first['nll_distance']['mean']:+.3f} -> {last['nll_distance']['mean']:+.3f}"
        rows.append(row)
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def to_markdown(result: dict, figure: str | None) -> str:
    lines = [f"# {result['title']}", "",
             f"Reverse set: {result['reverse']['kind']} ({result['reverse']['path']}), {result['reverse']['rows']} rows "
             f"in order; points at {', '.join(map(str, result['sizes']))} rows. Base: {result['base']}."
             + (f" Aligner: {result['aligner']}." if result["aligner"] else ""), ""]
    for label, s in result["series"].items():
        metrics = sorted({m for p in s["points"] for m in p["metrics"]})
        lines += [f"## {label}", "", "| rows | " + " | ".join(metrics) + " | NLL distance to base |",
                  "|---" * (len(metrics) + 2) + "|"]
        base = s["base"]["metrics"]
        lines.append("| base | " + " | ".join(_ci(base.get(m)) for m in metrics) + " | 0 |")
        for p in s["points"]:
            d = p.get("nll_distance")
            dist = "-" if not d else f"{d['mean']:+.3f}" + (
                f" [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d.get("lo") is not None else "")
            lines.append(f"| {p['rows']} | " + " | ".join(_ci(p["metrics"].get(m)) for m in metrics) + f" | {dist} |")
        half = ", ".join(f"{m}: {_fmt_rows(h, result['sizes'][-1])}" for m, h in s["half_gain"].items())
        lines += ["", f"Rows to lose half the gain: {half or '-'}", ""]
    if figure:
        lines += [f"![curves]({figure})", ""]
    return "\n".join(lines)


def _ci(c: dict | None) -> str:
    if not c or c.get("mean") is None:
        return "-"
    return f"{100 * c['mean']:.1f}% [{100 * c['lo']:.0f}, {100 * c['hi']:.0f}]"


def write_outputs(result: dict, out: Path) -> list[Path]:
    from lightalign.evaluation import plots
    from lightalign.io import atomic_write_text

    paths = []
    figure = plots.curves(out / "elasticity.png", result)
    if figure:
        result["figure"] = figure.name
        paths.append(figure)
    write_json(out / "elasticity.json", result)
    atomic_write_text(out / "elasticity.md", to_markdown(result, result.get("figure")))
    return [out / "elasticity.json", *paths, out / "elasticity.md"]


def load_result(out: str | Path) -> dict:
    return json.loads((Path(out) / "elasticity.json").read_text(encoding="utf-8"))


def reverse_rows(out: str | Path) -> list[dict]:
    return read_jsonl(Path(out) / "reverse" / "rows.jsonl")
