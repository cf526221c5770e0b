"""`lightalign train recipe.yaml` with `method: aligner`: train a correction model (Ji et al. 2024).

Residual learning as in the paper: stage 1 ("identity") trains on a share of the rows turned into
Q-A-A (copy the answer); stage 2 trains on the Q-A-C rows starting from the stage-1 weights. The
loss covers only the correction tokens (the prompt is masked with -100).
Full fine-tuning for small aligners; LoRA, or QLoRA on a 4-bit base (model.quantization: nf4), for
2B-7B aligners on one consumer GPU. The recipe uses the sections every method shares
(lightalign.training.sections) with Aligner defaults. Both stages run the transformers Trainer
through lightalign.training.runs: each stage checkpoints into <output_dir>/<stage>/checkpoints
(committed checkpoints only) and resumes from there, a finished stage is not re-run, and
metrics.json, written last, marks the run complete.
Output: safetensors weights (or a LoRA adapter) + tokenizer + aligner_config.json (template,
architecture, base model as an absolute path), loadable with `Aligner.from_pretrained(output_dir)`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from lightalign import loading, model_sources
from lightalign.errors import UserError
from lightalign.io import write_json
from lightalign.training import distributed, policy, runs
from lightalign.training.sections import DataSection, LoraSection, ModelSection, TrainingSection, check_bounds


@dataclass
class AlignerModelSection(ModelSection):
    name_or_path: str = ""
    quantization: Literal["nf4", "none"] = "none"   # nf4 (QLoRA) needs lora.enabled
    attn_implementation: Optional[str] = None
    architecture: Literal["auto", "causal", "seq2seq"] = "auto"


@dataclass
class AlignerDataSection(DataSection):
    # data.path: a .jsonl/.json file, or a hub dataset id (needs `datasets`)
    schema: str = "auto"  # a schema of lightalign.schemas that gives triples; auto: told by the first row's keys
    VIEW = "triples"
    eval_path: Optional[str] = None
    max_length: int = 2048  # prompt + correction tokens; longer rows are skipped (and counted)
    # at most this share of the rows keep their answer (aligner.data.cap_unchanged); null: all rows
    unchanged_share: Optional[float] = None

    def validate(self):
        if not (self.path or self.hub_id):
            raise ValueError("data.path is required")
        if self.unchanged_share is not None and not 0 <= self.unchanged_share <= 1:
            raise ValueError(f"data.unchanged_share must be in [0, 1], got {self.unchanged_share}")
        super().validate()


@dataclass
class AlignerLoraSection(LoraSection):
    enabled: bool = False
    merge: bool = False  # save the adapter merged into the (full-precision) base: loads without peft

    def validate(self):
        super().validate()
        if self.init_from:
            raise ValueError("lora.init_from is not supported by the Aligner recipe")


@dataclass
class AlignerTrainingSection(TrainingSection):
    epochs: float = 3.0
    batch_size: int = 4
    lr: float = 2e-5
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    save_steps: int = 0  # >0: mid-stage checkpoints every N steps (resumable)


@dataclass
class IdentitySection:
    share: float = 0.2  # fraction of rows turned into Q-A-A for the warm-up stage (0 disables it)
    epochs: float = 1.0
    lr: Optional[float] = None  # default: training.lr
    source: Literal["all", "unchanged"] = "all"  # unchanged: only rows the correction leaves as they are


@dataclass
class SentenceRowsSection:
    """Sentence-level rows for streamed correction (lightalign.aligner.streaming), built from the same
    triples (aligner.data.sentence_rows) and trained in the correction stage beside the whole-answer rows."""
    share: float = 0.0  # fraction of the triples split into sentence rows (0: off, no sentence template)
    template: Optional[str] = None  # default: chat-sentence-v1 with a chat template, else sentence-v1
    max_per_answer: int = 16


@dataclass
class Config:
    model: AlignerModelSection = field(default_factory=AlignerModelSection)
    data: AlignerDataSection = field(default_factory=AlignerDataSection)
    output_dir: str = ""
    template: str = "aligner-v2"
    max_new_tokens: int = 512  # recorded for inference
    copy_bias: float = 0.0  # recorded for inference: 0 = exact greedy (see Aligner)
    copy_min_prob: float = 0.0  # recorded for inference: 0 = off (see Aligner)
    identity: IdentitySection = field(default_factory=IdentitySection)
    sentence_rows: SentenceRowsSection = field(default_factory=SentenceRowsSection)
    lora: AlignerLoraSection = field(default_factory=AlignerLoraSection)
    training: AlignerTrainingSection = field(default_factory=AlignerTrainingSection)
    resume: Literal["auto", "never"] = "auto"  # auto: finished stages and committed checkpoints are reused
    # keys of an inspector recipe (lightalign.aligner.inspector_train; model and data default to this
    # recipe's): after the Aligner, train its gate from the same triples into <output_dir>/inspector
    inspector: Optional[dict] = None

    def validate(self):
        from lightalign.aligner.templates import get_template

        if not self.model.name_or_path:
            raise ValueError("model.name_or_path is required")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if not 0.0 <= self.identity.share < 1.0:
            raise ValueError(f"identity.share must be in [0, 1), got {self.identity.share}")
        if self.model.quantization != "none" and not self.lora.enabled:
            raise ValueError("model.quantization=nf4 (QLoRA) needs lora.enabled: true")
        if not 0.0 <= self.sentence_rows.share <= 1.0 or self.sentence_rows.max_per_answer < 1:
            raise ValueError("sentence_rows.share must be in [0, 1] and sentence_rows.max_per_answer >= 1")
        if self.sentence_rows.template:
            try:
                get_template(self.sentence_rows.template)
            except UserError as e:
                raise ValueError(f"sentence_rows.template: {e}") from None
        if self.copy_bias < 0 or not 0 <= self.copy_min_prob < 1:
            raise ValueError("copy_bias must be >= 0 and copy_min_prob in [0, 1)")
        try:
            get_template(self.template)
        except UserError as e:
            raise ValueError(f"template: {e}") from None
        if self.inspector is not None:
            inspector_config(self)


def inspector_config(cfg: Config):
    """The inspector recipe an Aligner recipe's `inspector:` section stands for, validated (a bad key is
    named as inspector.<key>): the Aligner's base and triples unless the section says otherwise."""
    from lightalign.aligner import inspector_train
    from lightalign.config import from_dict

    section = dict(cfg.inspector)
    m = cfg.model
    model = {"name_or_path": m.name_or_path, "compute_dtype": m.compute_dtype, "revision": m.revision,
             "trust_remote_code": m.trust_remote_code, "allow_pickle": m.allow_pickle, **(section.pop("model", None) or {})}
    d = cfg.data
    data = {"path": d.path, "hub_id": d.hub_id, "hub_config": d.hub_config, "split": d.split, "schema": d.schema,
            "preference": d.preference, "keep_unsafe_pairs": d.keep_unsafe_pairs, "max_length": d.max_length,
            **(section.pop("data", None) or {})}
    try:
        return from_dict(inspector_train.Config, {"model": model, "data": data, "aligner": cfg.output_dir,
                                                  "resume": cfg.resume, **section}, source="inspector")
    except UserError as e:
        raise ValueError(str(e).replace("inspector: unknown key '", "unknown key 'inspector.")
                         .replace("inspector: field '", "field 'inspector.")) from None


def _train_inspector(cfg: Config) -> None:
    if cfg.inspector is not None and distributed.is_main():
        from lightalign.aligner import inspector_train

        inspector_train.train(inspector_config(cfg))


# ------------------------------------------------------------------------------------ data
def encode_rows(triples: list[dict], tokenizer, template, architecture: str, max_length: int,
                sentence_template=None) -> tuple[list, int]:
    """Token ids + labels (-100 on the prompt) per row; returns (rows, how many were too long).
    Sentence rows (with a "prefix") are encoded with `sentence_template`."""
    rows, skipped = [], 0
    eos = tokenizer.eos_token_id
    for t in triples:
        if "prefix" in t:
            prompt = sentence_template.encode(tokenizer, t["question"], t["answer"], t["prefix"])
        else:
            prompt = template.encode(tokenizer, t["question"], t["answer"])
        if architecture == "seq2seq":
            labels = tokenizer(text_target=t["correction"])["input_ids"]
            if len(prompt) > max_length or len(labels) > max_length:
                skipped += 1
                continue
            rows.append({"input_ids": prompt, "attention_mask": [1] * len(prompt), "labels": labels})
            continue
        target = tokenizer(t["correction"], add_special_tokens=False)["input_ids"] + [eos]
        ids = prompt + target
        if len(ids) > max_length:  # cutting would drop EOS and teach the model never to stop
            skipped += 1
            continue
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + target})
    return rows, skipped


# ------------------------------------------------------------------------------------ model
def load_model(cfg: Config, weights_from: str | None = None):
    """(model, tokenizer, architecture): full model, or a LoRA/QLoRA PeftModel on the base."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    m = cfg.model
    src = loading.check_model_source(m.name_or_path, m.trust_remote_code, m.allow_pickle, gguf_file=m.gguf_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=m.trust_remote_code, revision=m.revision)
        mconf = AutoConfig.from_pretrained(src, trust_remote_code=m.trust_remote_code, revision=m.revision)
    except (OSError, ValueError) as e:
        raise loading.load_error(src, e, m.allow_pickle) from None
    arch = m.architecture
    if arch == "auto":
        arch = "seq2seq" if mconf.is_encoder_decoder else "causal"
    if tokenizer.pad_token_id is None:
        # Safe here although pad == EOS is a classic bug: our labels are built explicitly (EOS kept),
        # padding is only masked, so the model still learns to stop.
        tokenizer.pad_token = tokenizer.eos_token
    dtype = loading.compute_dtype(m.compute_dtype)
    kw = dict(dtype=dtype, trust_remote_code=m.trust_remote_code, use_safetensors=None if m.allow_pickle else True)
    if m.revision:
        kw["revision"] = m.revision
    if m.attn_implementation:
        kw["attn_implementation"] = m.attn_implementation
    quant = loading.quantization_config(m.quantization, m.double_quant, dtype, m.quant_storage)
    if quant is not None:
        kw["quantization_config"] = quant
    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    full_src = weights_from if (weights_from and not cfg.lora.enabled) else src
    try:
        model = auto.from_pretrained(full_src, **kw)
    except (OSError, ValueError) as e:
        raise loading.load_error(full_src, e, m.allow_pickle) from None
    gc_kwargs = {"use_reentrant": False}
    if cfg.lora.enabled:
        try:
            from peft import get_peft_model, prepare_model_for_kbit_training
        except ImportError:
            raise UserError("LoRA training needs peft: pip install 'lightalign[train]'") from None
        if quant is not None:
            loading.keep_4bit_layout_trainable(model)  # evaluation passes must not break later gradients
            if m.upcast_non_quantized:  # upcasts norms, enables input grads for checkpointing
                model = prepare_model_for_kbit_training(model, cfg.training.gradient_checkpointing, gc_kwargs)
        if weights_from:
            model = loading.load_peft(model, weights_from, m.allow_pickle, trainable=True)
        else:
            task = "SEQ_2_SEQ_LM" if arch == "seq2seq" else "CAUSAL_LM"
            model = get_peft_model(model, policy.lora_config(cfg.lora, task_type=task))
    if cfg.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if cfg.lora.enabled:
            model.enable_input_require_grads()
        model.config.use_cache = False
    return model, tokenizer, arch


# ------------------------------------------------------------------------------------ stages
def _run_stage(cfg: Config, model, tokenizer, arch: str, rows: list, eval_rows: list | None, stage_dir: Path,
               epochs: float, lr: float, callbacks=()) -> dict:
    """Train one stage with the Trainer, resuming from its last committed checkpoint."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    t = cfg.training
    stage_dir.mkdir(parents=True, exist_ok=True)
    resume_from = runs.resumable_checkpoint(stage_dir)
    runs.announce_resume(resume_from, f"{stage_dir}: ")
    args = runs.training_arguments(
        t, runs.checkpoint_dir(stage_dir), loading.compute_dtype(cfg.model.compute_dtype), TrainingArguments,
        num_train_epochs=epochs, learning_rate=lr, per_device_eval_batch_size=t.batch_size,
        eval_strategy="epoch" if eval_rows else "no", remove_unused_columns=False,
        activation_checkpointing=False, activation_checkpointing_kwargs=None,  # load_model set it on the model
    )
    tokenizer.padding_side = "right"  # training pads on the right; batched generation pads on the left
    collator = DataCollatorForSeq2Seq(tokenizer, model=model if arch == "seq2seq" else None,
                                      label_pad_token_id=-100, padding=True)
    counter = runs.CountingCollator(collator, tokenizer.pad_token_id)
    commit, recorder = runs.make_callbacks(resume_from)
    recorder.counter = counter
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_rows or None,
                      data_collator=counter, callbacks=[commit, recorder, *callbacks])
    recorder.trainer = trainer
    trainer.train(resume_from_checkpoint=resume_from)
    log = trainer.state.log_history
    whole = runs.run_metrics(trainer, recorder, "aligner", recorder.started or time.perf_counter())
    return {"train_loss": whole["train_loss_mean"], "rows": len(rows), "steps": trainer.state.global_step,
            "seconds": whole["train_seconds"],
            "first_loss": next((h["loss"] for h in log if "loss" in h), None),
            "final_loss": next((h["loss"] for h in reversed(log) if "loss" in h), None),
            "eval_loss": next((h["eval_loss"] for h in reversed(log) if "eval_loss" in h), None),
            "loss_curve": whole["loss_curve"], "tokens": whole["tokens"],
            "processed_tokens": whole["processed_tokens"], "resumed_from": resume_from}


def _merged(cfg: Config, adapter_dir: Path, arch: str):
    """The adapter folded into a full-precision copy of the base (never into 4-bit weights, which
    loses quality): a plain model that loads with the core dependencies only."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    m = cfg.model
    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    src = loading.check_model_source(m.name_or_path, m.trust_remote_code, m.allow_pickle, gguf_file=m.gguf_file)
    base = auto.from_pretrained(src, dtype=loading.compute_dtype(m.compute_dtype),
                                trust_remote_code=m.trust_remote_code,
                                use_safetensors=None if m.allow_pickle else True)
    return loading.load_peft(base, adapter_dir, m.allow_pickle).merge_and_unload()


def base_model_reference(name_or_path: str) -> str:
    """The base as aligner_config.json names it for lightalign (model_sources.local_reference)."""
    return model_sources.local_reference(name_or_path)


def _save(model, tokenizer, out: Path, cfg: Config, arch: str, extra: dict) -> None:
    from lightalign.aligner.model import CONFIG_NAME, aligner_config
    from lightalign.aligner.templates import get_template

    adapter = cfg.lora.enabled and not cfg.lora.merge
    base = base_model_reference(cfg.model.name_or_path)
    if getattr(model, "peft_config", None):  # plain PEFT loads the adapter: the dequantized folder of a GGUF base
        runs.name_base(model, out / "adapter" if cfg.lora.merge else out, cfg.model.name_or_path)
    if cfg.lora.enabled and cfg.lora.merge:
        model.save_pretrained(out / "adapter", safe_serialization=True)  # kept: small, and the raw result
        model = _merged(cfg, out / "adapter", arch)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_json(out / CONFIG_NAME, aligner_config(get_template(cfg.template), arch, base, cfg.max_new_tokens,
                                                 {"adapter": adapter, "copy_bias": cfg.copy_bias,
                                                  "copy_min_prob": cfg.copy_min_prob, **extra}))


def train(cfg: Config, callbacks=()) -> Path:
    from transformers import set_seed

    from lightalign.aligner.data import cap_unchanged, identity_rows, load_triples, sentence_rows, triples_with_stats
    from lightalign.aligner.templates import get_template

    started = time.perf_counter()
    if cfg.inspector is not None:
        check_bounds(inspector_config(cfg), "inspector")  # not only after the Aligner has trained
    out, _, done = runs.prepare_run(cfg, "aligner")  # refuses sizes the model cannot take, before any deletion
    if cfg.resume == "never":  # start over: finished stages too
        if distributed.is_main():
            for stage in ("identity", "correction"):
                shutil.rmtree(out / stage, ignore_errors=True)
        distributed.barrier()
    if done:
        runs.notice(f"{out}: already complete (metrics.json present); skipping")
        _train_inspector(cfg)
        return out
    set_seed(cfg.training.seed)
    template = get_template(cfg.template)
    sr = cfg.sentence_rows
    sentence_template = get_template(sr.template or ("chat-sentence-v1" if template.chat else "sentence-v1")) \
        if sr.share > 0 else None
    source = cfg.data.path or cfg.data.hub_id
    d = cfg.data
    triples, stats = triples_with_stats(source, d.schema, d.preference, d.max_rows, d.keep_unsafe_pairs)
    runs.report_data_stats(stats, source)
    if d.unchanged_share is not None:
        triples = cap_unchanged(triples, d.unchanged_share)
        if not triples:
            raise UserError(f"{source}: data.unchanged_share={d.unchanged_share} leaves no rows "
                            "(no triple's correction changes its answer)")
    eval_triples = load_triples(d.eval_path, d.schema, d.preference, keep_unsafe_pairs=d.keep_unsafe_pairs) \
        if d.eval_path else None
    log: dict = {"method": "aligner", "template": template.name, "rows": len(triples)}

    id_dir = out / "identity"
    id_done = (id_dir / runs.STAGE_DONE).exists()
    model, tokenizer, arch = load_model(cfg, weights_from=str(id_dir) if id_done else None)
    if template.chat and arch == "seq2seq":
        raise UserError(f"template {template.name!r} uses a chat template: pick a plain one for a seq2seq model")

    def encoded(rows):
        enc, skipped = encode_rows(rows, tokenizer, template, arch, cfg.data.max_length, sentence_template)
        if skipped:
            runs.notice(f"skipped {skipped} rows longer than data.max_length={cfg.data.max_length}")
        if not enc:
            raise UserError(f"{source}: no row fits data.max_length={cfg.data.max_length}")
        return enc

    eval_rows = encoded(eval_triples) if eval_triples else None
    if cfg.identity.share > 0:
        if id_done:
            log["identity"] = json.loads((id_dir / runs.STAGE_DONE).read_text(encoding="utf-8"))
        else:
            ident = identity_rows(triples, cfg.identity.share, cfg.training.seed, cfg.identity.source)
            log["identity"] = _run_stage(cfg, model, tokenizer, arch, encoded(ident), None, id_dir,
                                         cfg.identity.epochs, cfg.identity.lr or cfg.training.lr, callbacks)
            if distributed.is_main():
                model.save_pretrained(id_dir, safe_serialization=True)  # stage 2 resumes from here after a crash
                write_json(id_dir / runs.STAGE_DONE, log["identity"])
            distributed.barrier()
    if sentence_template is not None:
        extra_rows = sentence_rows(triples, sr.share, cfg.training.seed, sr.max_per_answer)
        log["sentence_rows"] = len(extra_rows)
        triples = triples + extra_rows
    log["correction"] = _run_stage(cfg, model, tokenizer, arch, encoded(triples), eval_rows, out / "correction",
                                   cfg.training.epochs, cfg.training.lr, callbacks)
    stages = [log[s] for s in ("identity", "correction") if s in log]
    log.update({
        "global_step": log["correction"]["steps"], "train_loss": log["correction"]["final_loss"],
        "loss_curve": log["correction"]["loss_curve"],
        "tokens": sum(s["tokens"] for s in stages), "processed_tokens": sum(s["processed_tokens"] for s in stages),
        "train_seconds": sum(s["seconds"] or 0 for s in stages),
    })
    if distributed.is_main():
        extra = {"train": {k: log[k] for k in ("rows", "template")}}
        if sentence_template is not None:
            extra["sentence_template"] = sentence_template.to_dict()
        _save(model, tokenizer, out, cfg, arch, extra)
    log["seconds"] = round(time.perf_counter() - started, 1)
    log["wall_seconds"] = time.perf_counter() - started
    log["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log["world_size"] = distributed.world_size()
    runs.write_metrics(out, log)  # written last: its presence means "complete"
    if not distributed.is_main():
        return out
    for stage in ("identity", "correction"):  # mid-stage checkpoints are only for resuming (tracker logs stay)
        ckpts = out / stage / "checkpoints"
        for ckpt in ckpts.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
        if ckpts.is_dir() and not any(ckpts.iterdir()):
            ckpts.rmdir()
    _train_inspector(cfg)
    return out
