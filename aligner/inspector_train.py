"""`lightalign train recipe.yaml` with `method: inspector`: train the gate that runs before the Aligner.

The inspector (lightalign.aligner.inspector) is a sequence classifier over (question, answer), trained
from the Aligner's own triples: label 1 when the correction differs from the answer. Rows are split
in file order: the last `data.eval_share` are held out (or `data.eval_path`), the last `data.val_share`
of the rest pick the threshold (the highest one whose validation recall >= `target_recall`), the
others train. Taking splits from the file's end keeps them out of an Aligner trained on its first
`data.max_rows` rows.

Modes:
- head (default, cheapest): the base stays frozen; its last-token hidden states are computed once and
  a logistic-regression head is fitted on them (full batch, L-BFGS, L2 picked on validation). The
  Trainer would re-run the frozen base every epoch for the same result, so this mode does without it.
- lora: LoRA on the base + the score head (PEFT SEQ_CLS), trained with the transformers Trainer through
  lightalign.training.runs (committed checkpoints, resume); `full`: every weight, for tiny bases.

With `aligner: PATH` the inspector is saved to PATH/inspector (unless output_dir says otherwise), the
Aligner's own copy probability (the "copy_prob" gate) is measured on the same validation and held-out
rows, and the better gate on validation F1 (`gate: auto`, or the one named) is written into PATH's
aligner_config.json. metrics.json holds both gates' precision, recall, F1, accuracy and thresholds.
The gate's line for answers still being written (streamed correction) is picked on the validation
answers cut after each sentence (`partial_threshold`, see lightalign.aligner.inspector).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from lightalign import loading
from lightalign.aligner.inspector import (COPY_STATISTICS, HEAD_WEIGHTS, INSPECTOR_CONFIG, CopyProbGate, Inspector,
                                          clip, copy_statistics, gate_metrics, inspect_template, keep_layers,
                                          kept_layers, needs_correcting, partial_answers, partial_metrics,
                                          pick_partial_threshold, pick_threshold, write_gate)
from lightalign.errors import UserError
from lightalign.io import write_json
from lightalign.training import policy, runs
from lightalign.training.sections import DataSection, LoraSection, ModelSection, TrainingSection

HEAD_L2_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class InspectorModelSection(ModelSection):
    name_or_path: str = ""
    quantization: Literal["nf4", "none"] = "none"
    attn_implementation: Optional[str] = None


@dataclass
class InspectorDataSection(DataSection):
    schema: str = "auto"  # a schema of lightalign.schemas that gives triples
    VIEW = "triples"
    eval_path: Optional[str] = None  # held-out triples; default: the last eval_share of data.path
    eval_share: float = 0.2
    val_share: float = 0.2  # of the rows left, the last ones pick the threshold
    max_length: int = 384  # longer prompts keep their head and tail (aligner.inspector.clip)

    def validate(self):
        if not (self.path or self.hub_id):
            raise ValueError("data.path is required")
        super().validate()
        for name in ("eval_share", "val_share"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be in (0, 1), got {getattr(self, name)}")


@dataclass
class InspectorLoraSection(LoraSection):
    # used by mode: lora only
    def validate(self):
        super().validate()
        if self.init_from:
            raise ValueError("lora.init_from is not supported by the inspector recipe")


@dataclass
class InspectorTrainingSection(TrainingSection):
    epochs: float = 3.0
    batch_size: int = 8
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    save_steps: int = 0
    logging_steps: int = 5


@dataclass
class Config:
    model: InspectorModelSection = field(default_factory=InspectorModelSection)
    data: InspectorDataSection = field(default_factory=InspectorDataSection)
    output_dir: str = ""  # default: <aligner>/inspector
    aligner: Optional[str] = None  # the Aligner to gate: its copy_prob is measured, its config gets the gate
    mode: Literal["head", "lora", "full"] = "head"
    template: str = "auto"  # inspect-chat with a chat template, else inspect-plain (aligner.inspector)
    target_recall: float = 0.95  # the threshold: highest one with validation recall >= this
    threshold: Optional[float] = None  # a fixed threshold instead
    # for answers still being written (streamed correction): null picks it on validation so that streaming
    # flags no more good answers than whole-answer correction (aligner.inspector.pick_partial_threshold)
    partial_threshold: Optional[float] = None
    head_l2: Optional[float] = None  # mode head: L2 of the fitted head; null: the best of HEAD_L2_GRID on validation
    # mode head: read the state after this many decoder layers (a count, or a share of the depth in (0, 1));
    # the later ones are dropped, so scoring is cheaper too. null: all layers (the last one's state)
    layers: Optional[float] = None
    gate: Literal["auto", "inspector", "copy_prob", "none"] = "auto"  # what to write into the Aligner's config
    batch_size: int = 16  # forward passes outside training (features, scores, copy statistics)
    lora: InspectorLoraSection = field(default_factory=InspectorLoraSection)
    training: InspectorTrainingSection = field(default_factory=InspectorTrainingSection)
    resume: Literal["auto", "never"] = "auto"

    def validate(self):
        if not self.model.name_or_path:
            raise ValueError("model.name_or_path is required")
        if not self.output_dir:
            if not self.aligner:
                raise ValueError("output_dir is required (or aligner, to save into <aligner>/inspector)")
            self.output_dir = str(Path(self.aligner) / "inspector")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.partial_threshold is not None and not 0 < self.partial_threshold <= 1:
            raise ValueError(f"partial_threshold must be in (0, 1], got {self.partial_threshold}")
        if self.head_l2 is not None and self.head_l2 < 0:
            raise ValueError(f"head_l2 must be >= 0, got {self.head_l2}")
        if self.gate == "copy_prob" and not self.aligner:
            raise ValueError("gate: copy_prob needs aligner (the Aligner whose copy probability gates)")
        if self.mode != "lora" and self.model.quantization != "none":
            raise ValueError(f"model.quantization=nf4 needs mode: lora (mode {self.mode} trains full-precision weights)")
        if self.layers is not None:
            if self.mode != "head":
                raise ValueError(f"layers is for mode head (a head on a frozen, shortened base), not mode {self.mode}")
            if self.layers <= 0 or (self.layers >= 1 and self.layers != int(self.layers)):
                raise ValueError(f"layers must be a whole number of layers or a share in (0, 1), got {self.layers}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        try:
            inspect_template(self.template)
        except UserError as e:
            raise ValueError(f"template: {e}") from None


# ------------------------------------------------------------------------------------ data
def split(triples: list[dict], eval_triples: list[dict] | None, eval_share: float, val_share: float):
    """(train, validation, held-out) in file order: held-out and validation from the end."""
    rows = list(triples)
    if eval_triples is None:
        k = max(1, round(len(rows) * eval_share))
        rows, eval_triples = rows[:-k], rows[-k:]
    k = max(1, round(len(rows) * val_share))
    train, val = rows[:-k], rows[-k:]
    for name, part in (("training", train), ("validation", val), ("held-out", eval_triples)):
        if not part:
            raise UserError(f"too few triples for a {name} split ({len(triples)} rows)")
    labels = {needs_correcting(t) for t in train}
    if labels != {0, 1}:
        raise UserError("the training split needs triples of both kinds: corrections that differ from their "
                        f"answer and corrections that keep it (all have label {labels.pop()})")
    return train, val, eval_triples


# ------------------------------------------------------------------------------------ model
def load_model(cfg: Config):
    """(sequence classifier with one logit, tokenizer, resolved base source) through the one loader."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    m = cfg.model
    src = loading.check_model_source(m.name_or_path, m.trust_remote_code, m.allow_pickle, gguf_file=m.gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=m.trust_remote_code, revision=m.revision)
    except (OSError, ValueError) as e:
        raise loading.load_error(src, e, m.allow_pickle) from None
    dtype = loading.compute_dtype(m.compute_dtype)
    kw = dict(dtype=dtype, num_labels=1, problem_type="multi_label_classification",  # one logit, BCE loss
              trust_remote_code=m.trust_remote_code, use_safetensors=None if m.allow_pickle else True)
    if m.revision:
        kw["revision"] = m.revision
    if m.attn_implementation:
        kw["attn_implementation"] = m.attn_implementation
    quant = loading.quantization_config(m.quantization, m.double_quant, dtype, m.quant_storage)
    if quant is not None:
        kw["quantization_config"] = quant
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized": it is what we train
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        raise loading.load_error(src, e, m.allow_pickle) from None
    finally:
        hf_logging.set_verbosity(level)
    loading.ensure_pad_token(tokenizer, model)  # the classifier pools the last token that is not padding
    tokenizer.padding_side = "right"
    return model, tokenizer


def encode(rows: list[dict], tokenizer, template, max_length: int) -> list[list[int]]:
    return [clip(template.encode(tokenizer, t["question"], t["answer"]), max_length) for t in rows]


def pooled_features(model, ids: list[list[int]], pad_id: int, batch_size: int):
    """The frozen base's last-token hidden state per row (what the classifier's score layer reads), fp32."""
    import torch

    from lightalign.aligner.inspector import _batches, _padded

    backbone = getattr(model, model.base_model_prefix)
    device = next(model.parameters()).device
    out = torch.zeros((len(ids), model.config.hidden_size))
    for idx in _batches([len(r) for r in ids], batch_size):
        batch, mask = _padded([ids[i] for i in idx], pad_id, device)
        with torch.inference_mode():
            hidden = backbone(input_ids=batch, attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1
        out[idx] = hidden[torch.arange(len(idx)), last].float().cpu()
    return out


def fit_head(x, y, l2: float):
    """Logistic regression on standardized features, classes weighted equally, full-batch L-BFGS; returned
    in raw-feature units: (weight, bias) with logit = x @ weight + bias."""
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    target = torch.tensor(y, dtype=torch.float32)
    pos = float(target.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / pos))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(z @ w + b, target) + l2 * (w * w).sum() / len(y)
        loss.backward()
        return loss

    opt.step(closure)
    weight = (w / sd).detach()
    return weight, float(b.detach() - (mu / sd * w.detach()).sum())


def _sigmoid(logits) -> list[float]:
    import torch

    return torch.sigmoid(logits).tolist()


def train_head(cfg: Config, model, tokenizer, ids: dict, labels: dict) -> dict:
    """Fit the head on the frozen base's features; returns scores per split and what was fitted."""
    import torch

    if not hasattr(model, "score"):
        raise UserError(f"mode head reads a decoder's last token; {type(model).__name__} has no score layer "
                        "(use mode lora or full)")
    for p in model.parameters():
        p.requires_grad_(False)
    feats = {k: pooled_features(model, v, tokenizer.pad_token_id, cfg.batch_size) for k, v in ids.items()}
    grid = [cfg.head_l2] if cfg.head_l2 is not None else list(HEAD_L2_GRID)
    best = None
    for l2 in grid:
        weight, bias = fit_head(feats["train"], labels["train"], l2)
        val = _sigmoid(feats["val"] @ weight + bias)
        t = cfg.threshold if cfg.threshold is not None else pick_threshold(val, labels["val"], cfg.target_recall)[0]
        m = gate_metrics(val, labels["val"], t)
        key = (m["f1"], m["precision"] or 0.0)
        if best is None or key > best[0]:
            best = (key, l2, weight, bias)
    _, l2, weight, bias = best
    with torch.no_grad():
        model.score.weight.copy_(weight[None, :].to(model.score.weight.dtype))
    # the score layer holds the weight in the model's dtype: score with what inference will compute
    w_used = model.score.weight.detach().float()[0]
    return {"scores": {k: _sigmoid(f @ w_used + bias) for k, f in feats.items() if k != "train"},
            "logit_bias": bias, "head_l2": l2, "l2_grid": grid}


def train_trainer(cfg: Config, model, tokenizer, ids: dict, labels: dict, out: Path, callbacks=()) -> dict:
    """LoRA (or every weight) + the score head with the Trainer, resuming from committed checkpoints."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    if cfg.mode == "lora":
        from peft import get_peft_model  # SEQ_CLS puts the score head in modules_to_save

        model = get_peft_model(model, policy.lora_config(cfg.lora, task_type="SEQ_CLS"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    t = cfg.training
    resume_from = runs.resumable_checkpoint(out)
    runs.announce_resume(resume_from, f"{out}: ")
    args = runs.training_arguments(t, runs.checkpoint_dir(out), loading.compute_dtype(cfg.model.compute_dtype),
                                   TrainingArguments, remove_unused_columns=False)
    rows = [{"input_ids": r, "attention_mask": [1] * len(r), "labels": [float(y)]}
            for r, y in zip(ids["train"], labels["train"])]
    counter = runs.CountingCollator(DataCollatorWithPadding(tokenizer), tokenizer.pad_token_id)
    commit, recorder = runs.make_callbacks(resume_from)
    recorder.counter = counter
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counter,
                      callbacks=[commit, recorder, *callbacks])
    recorder.trainer = trainer
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    whole = runs.run_metrics(trainer, recorder, "inspector", recorder.started or started)
    scores = {k: _sigmoid(encoded_logits(model, ids[k], tokenizer.pad_token_id, cfg.batch_size))
              for k in ("val", "heldout")}
    return {"scores": scores, "logit_bias": 0.0, "model": model, "trainer": whole}


def encoded_logits(model, ids: list[list[int]], pad_id: int, batch_size: int):
    """The classifier's logits for rows already encoded (Inspector.logits encodes text itself)."""
    import torch

    from lightalign.aligner.inspector import _batches, _padded

    out = torch.zeros(len(ids))
    device = next(model.parameters()).device
    model.eval()
    for idx in _batches([len(r) for r in ids], batch_size):
        batch, mask = _padded([ids[i] for i in idx], pad_id, device)
        with torch.inference_mode():
            out[idx] = model(input_ids=batch, attention_mask=mask).logits[:, -1].float().cpu()
    return out


# ------------------------------------------------------------------------------------ copy prob
def copy_prob_gates(cfg: Config, aligner, splits: dict, labels: dict) -> dict:
    """The Aligner's copy statistics on validation and held-out rows: per statistic, the threshold picked
    on validation and both splits' metrics; "best": the statistic with the best validation F1."""
    started = time.perf_counter()
    stats = {k: copy_statistics(aligner, [(t["question"], t["answer"]) for t in splits[k]], cfg.batch_size)
             for k in ("val", "heldout")}
    out = {}
    for name in COPY_STATISTICS:
        val = [-s[name] for s in stats["val"]]
        held = [-s[name] for s in stats["heldout"]]
        t, _ = pick_threshold(val, labels["val"], cfg.target_recall)
        out[name] = {"threshold": t, "validation": gate_metrics(val, labels["val"], t),
                     "heldout": gate_metrics(held, labels["heldout"], t)}
    best = max(COPY_STATISTICS, key=lambda n: (out[n]["validation"]["f1"], out[n]["validation"]["precision"] or 0))
    return {"statistics": out, "best": best, "seconds": round(time.perf_counter() - started, 1)}


def streamed_gate(cfg: Config, scores_fn, splits: dict, labels: dict, threshold: float) -> dict:
    """The gate on answers still being written: every validation and held-out answer scored at each of its
    sentence prefixes; the partial threshold (the recipe's, or picked on validation) and, on both splits, how
    many answers it flags at some step, beside the same at the whole-answer threshold."""
    started = time.perf_counter()
    steps = {k: [partial_answers(t["answer"]) for t in splits[k]] for k in ("val", "heldout")}
    scores = {}
    for k, parts in steps.items():
        flat = scores_fn([(t["question"], p) for t, ps in zip(splits[k], parts) for p in ps], cfg.batch_size)
        scores[k], at = [], 0
        for ps in parts:
            scores[k].append(flat[at:at + len(ps)])
            at += len(ps)
    if cfg.partial_threshold is not None:
        cut, rule = cfg.partial_threshold, "fixed (recipe key partial_threshold)"
    else:
        cut = pick_partial_threshold(scores["val"], labels["val"], threshold)
        rule = "lowest threshold flagging no more good validation answers at some sentence than whole"
    return {"threshold": cut, "rule": rule, "steps": {k: sum(map(len, v)) for k, v in steps.items()},
            **{name: partial_metrics(scores[k], labels[k], cut) for k, name in (("val", "validation"),
                                                                                 ("heldout", "heldout"))},
            "at_whole_threshold": {name: partial_metrics(scores[k], labels[k], threshold)
                                   for k, name in (("val", "validation"), ("heldout", "heldout"))},
            "seconds": round(time.perf_counter() - started, 1)}


# ------------------------------------------------------------------------------------ save
def _save(cfg: Config, model, tokenizer, template, out: Path, threshold: float, logit_bias: float,
          partial_threshold: float) -> None:
    from lightalign.aligner.train import base_model_reference

    base = base_model_reference(cfg.model.name_or_path)
    if cfg.mode == "head":
        from safetensors.torch import save_file

        save_file({"score.weight": model.score.weight.detach().float().contiguous().cpu()}, str(out / HEAD_WEIGHTS))
    elif cfg.mode == "lora":
        runs.name_base(model, out, cfg.model.name_or_path)  # a base plain PEFT loads, as for every adapter
        model.save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_json(out / INSPECTOR_CONFIG, {"base_model": base, "mode": cfg.mode, "template": template.to_dict(),
                                        "max_length": cfg.data.max_length, "logit_bias": logit_bias,
                                        "threshold": threshold, "partial_threshold": partial_threshold,
                                        "layers": kept_layers(model)})


def train(cfg: Config, callbacks=()) -> Path:
    from transformers import set_seed

    from lightalign.aligner.data import load_triples, triples_with_stats

    started = time.perf_counter()
    if cfg.aligner and not (Path(cfg.aligner) / "aligner_config.json").is_file():
        raise UserError(f"aligner: {cfg.aligner} is not an Aligner folder (no aligner_config.json)")
    out, _, done = runs.prepare_run(cfg, "inspector")
    if done:
        runs.notice(f"{out}: already complete (metrics.json present); skipping")
        return out
    set_seed(cfg.training.seed)
    d = cfg.data
    source = d.path or d.hub_id
    triples, stats = triples_with_stats(source, d.schema, d.preference, None, d.keep_unsafe_pairs)
    runs.report_data_stats(stats, source)
    eval_triples = load_triples(d.eval_path, d.schema, d.preference, keep_unsafe_pairs=d.keep_unsafe_pairs) \
        if d.eval_path else None
    train_rows, val_rows, held_rows = split(triples, eval_triples, d.eval_share, d.val_share)
    if d.max_rows:
        train_rows = train_rows[:d.max_rows]
    splits = {"train": train_rows, "val": val_rows, "heldout": held_rows}
    labels = {k: [needs_correcting(t) for t in v] for k, v in splits.items()}

    model, tokenizer = load_model(cfg)
    if cfg.layers is not None:
        keep_layers(model, cfg.layers)
    template = inspect_template(cfg.template, tokenizer)
    ids = {k: encode(v, tokenizer, template, d.max_length) for k, v in splits.items()}
    fit_started = time.perf_counter()
    if cfg.mode == "head":
        fitted = train_head(cfg, model, tokenizer, ids, labels)
    else:
        fitted = train_trainer(cfg, model, tokenizer, ids, labels, out, callbacks)
        model = fitted.pop("model")
    train_seconds = time.perf_counter() - fit_started
    scores = fitted.pop("scores")
    if cfg.threshold is not None:
        threshold, rule = cfg.threshold, "fixed (recipe key threshold)"
    else:
        threshold, rule = pick_threshold(scores["val"], labels["val"], cfg.target_recall)
    inspector = {"threshold": threshold, "threshold_rule": rule,
                 "validation": gate_metrics(scores["val"], labels["val"], threshold),
                 "heldout": gate_metrics(scores["heldout"], labels["heldout"], threshold)}
    if cfg.mode == "head":
        inspector.update(head_l2=fitted["head_l2"], l2_grid=fitted["l2_grid"])
    scorer = Inspector(model, tokenizer, template, d.max_length, fitted["logit_bias"], threshold, cfg.batch_size)
    inspector["partial"] = streamed_gate(cfg, scorer.scores, splits, labels, threshold)
    _save(cfg, model, tokenizer, template, out, threshold, fitted["logit_bias"], inspector["partial"]["threshold"])
    log = {"method": "inspector", "mode": cfg.mode, "template": template.name,
           "rows": {k: len(v) for k, v in splits.items()},
           "positives": {k: sum(v) for k, v in labels.items()},
           "train_seconds": train_seconds, "inspector": inspector, **({"trainer": fitted["trainer"]}
                                                                    if "trainer" in fitted else {})}
    if cfg.aligner:
        from lightalign.aligner.model import Aligner

        aligner = Aligner.from_pretrained(cfg.aligner, gate=False, dtype=loading.compute_dtype(cfg.model.compute_dtype))
        copy = copy_prob_gates(cfg, aligner, splits, labels)
        log["copy_prob"] = copy
        best = copy["statistics"][copy["best"]]
        chosen = cfg.gate
        if chosen == "auto":
            chosen = "inspector" if (inspector["validation"]["f1"], inspector["validation"]["precision"] or 0) >= \
                (best["validation"]["f1"], best["validation"]["precision"] or 0) else "copy_prob"
        gate = None
        if chosen == "inspector":
            gate = {"kind": "inspector", "path": _relative(out, cfg.aligner), "threshold": threshold,
                    "partial_threshold": inspector["partial"]["threshold"]}
        elif chosen == "copy_prob":
            copy_gate = CopyProbGate(aligner, copy["best"], best["threshold"], cfg.batch_size)
            copy["partial"] = streamed_gate(cfg, copy_gate.scores, splits, labels, best["threshold"])
            gate = {"kind": "copy_prob", "statistic": copy["best"], "threshold": best["threshold"],
                    "partial_threshold": copy["partial"]["threshold"]}
        write_gate(cfg.aligner, gate)
        log["gate"] = gate
        runs.notice(f"{cfg.aligner}: gate {chosen}" + (f" (threshold {gate['threshold']:.4g})" if gate else ""))
    log["wall_seconds"] = time.perf_counter() - started
    runs.write_metrics(out, log)
    ckpts = runs.checkpoint_dir(out)  # mid-run checkpoints are only for resuming
    if ckpts.is_dir():
        shutil.rmtree(ckpts, ignore_errors=True)
    held = inspector["heldout"]
    runs.notice(f"inspector held-out: precision {_pct(held['precision'])}, recall {_pct(held['recall'])} at "
                f"threshold {threshold:.4g} ({held['n']} triples, {held['positives']} to correct)")
    part = inspector["partial"]
    runs.notice(f"inspector on streamed held-out answers at partial threshold {part['threshold']:.4g}: "
                f"{part['heldout']['flagged_to_correct']}/{part['heldout']['positives']} to correct and "
                f"{part['heldout']['flagged_fine']}/{held['n'] - held['positives']} good ones flagged at some "
                f"sentence ({part['at_whole_threshold']['heldout']['flagged_fine']} at the whole-answer threshold)")
    return out


def _relative(out: Path, aligner: str) -> str:
    """The inspector's path as aligner_config.json records it: relative when it sits inside the Aligner."""
    try:
        return str(Path(out).resolve().relative_to(Path(aligner).resolve()))
    except ValueError:
        return str(Path(out).resolve())


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
