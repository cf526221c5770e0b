"""`lightalign train recipe.yaml` with `method: aligner`: train a correction model (Ji et al. 2024).

Residual learning as in the paper: stage 1 ("identity") trains on a share of the rows turned into
Q-A-A (copy the answer); stage 2 trains on the Q-A-C rows starting from the stage-1 weights. The
loss covers only the correction tokens (the prompt is masked with -100).
Full fine-tuning for small aligners; LoRA, or QLoRA on a 4-bit base (bitsandbytes), for 2B-7B
aligners on one consumer GPU. Both stages run the transformers Trainer; each stage checkpoints
into its own folder and resumes from its last checkpoint, and a finished stage is not re-run.
Output: safetensors weights (or a LoRA adapter) + tokenizer + aligner_config.json (template,
architecture, base model), loadable with `Aligner.from_pretrained(output_dir)`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lightalign.errors import UserError


@dataclass
class ModelConfig:
    name_or_path: str = ""
    architecture: Literal["auto", "causal", "seq2seq"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass
class DataConfig:
    path: str = ""  # .jsonl/.json file, or a hub dataset id (needs `datasets`)
    format: Literal["auto", "triples", "aligner20k", "preference", "pku_saferlhf"] = "auto"
    prefer: Literal["safer", "better"] = "safer"  # PKU-SafeRLHF: which response is the correction
    eval_path: str | None = None
    max_rows: int | None = None
    max_length: int = 2048  # prompt + correction tokens; longer rows are skipped (and counted)


@dataclass
class IdentityConfig:
    share: float = 0.2  # fraction of rows turned into Q-A-A for the warm-up stage (0 disables it)
    epochs: float = 1.0
    lr: float | None = None  # default: training.lr


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    load_in_4bit: bool = False  # QLoRA: NF4 + double quant base, LoRA on top
    merge: bool = False  # save the adapter merged into the (full-precision) base: loads without peft


@dataclass
class TrainingConfig:
    epochs: float = 3.0
    lr: float = 2e-5
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    batch_size: int = 4
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = False
    save_steps: int = 0  # >0: mid-stage checkpoints every N steps (resumable)
    logging_steps: int = 10
    seed: int = 0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output_dir: str = ""
    template: str = "aligner-v2"
    max_new_tokens: int = 512  # recorded for inference
    copy_bias: float = 0.0  # recorded for inference: 0 = exact greedy (see Aligner)
    copy_min_prob: float = 0.0  # recorded for inference: 0 = off (see Aligner)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self):
        from lightalign.aligner.templates import get_template

        if not self.model.name_or_path:
            raise ValueError("model.name_or_path is required")
        if not self.data.path:
            raise ValueError("data.path is required")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if not 0.0 <= self.identity.share < 1.0:
            raise ValueError(f"identity.share must be in [0, 1), got {self.identity.share}")
        if self.lora.load_in_4bit and not self.lora.enabled:
            raise ValueError("lora.load_in_4bit (QLoRA) needs lora.enabled: true")
        if self.training.lr <= 0 or self.training.batch_size < 1:
            raise ValueError("training.lr must be > 0 and training.batch_size >= 1")
        if self.copy_bias < 0 or not 0 <= self.copy_min_prob < 1:
            raise ValueError("copy_bias must be >= 0 and copy_min_prob in [0, 1)")
        try:
            get_template(self.template)
        except UserError as e:
            raise ValueError(f"template: {e}") from None


def load_recipe(path, overrides: list[str] | None = None) -> Config:
    """A recipe YAML (`method: aligner`) + key=value overrides -> Config, as `lightalign train` reads it."""
    from lightalign.config import apply_overrides, from_dict, read_yaml

    data = apply_overrides(read_yaml(path), list(overrides or []))
    method = data.pop("method", "aligner")
    if method != "aligner":
        raise UserError(f"{path}: method must be 'aligner' here, got {method!r}")
    return from_dict(Config, data, source=str(path))


# ------------------------------------------------------------------------------------ data
def encode_rows(triples: list[dict], tokenizer, template, architecture: str, max_length: int) -> tuple[list, int]:
    """Token ids + labels (-100 on the prompt) per row; returns (rows, how many were too long)."""
    rows, skipped = [], 0
    eos = tokenizer.eos_token_id
    for t in triples:
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
def _dtype(cfg: Config):
    import torch

    if cfg.model.dtype == "float32" or not torch.cuda.is_available():
        return torch.float32
    if cfg.model.dtype == "bfloat16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # never fp16 by default: unstable for training


def load_model(cfg: Config, weights_from: str | None = None):
    """(model, tokenizer, architecture): full model, or a LoRA/QLoRA PeftModel on the base."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from lightalign.aligner.model import _load_error

    src = cfg.model.name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.model.trust_remote_code)
        mconf = AutoConfig.from_pretrained(src, trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(src, e, cfg.model.allow_pickle) from None
    arch = cfg.model.architecture
    if arch == "auto":
        arch = "seq2seq" if mconf.is_encoder_decoder else "causal"
    if tokenizer.pad_token_id is None:
        # Safe here although pad == EOS is a classic bug: our labels are built explicitly (EOS kept),
        # padding is only masked, so the model still learns to stop.
        tokenizer.pad_token = tokenizer.eos_token
    kw = dict(dtype=_dtype(cfg), trust_remote_code=cfg.model.trust_remote_code,
              use_safetensors=None if cfg.model.allow_pickle else True)
    if cfg.lora.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_dtype(cfg))
    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    full_src = weights_from if (weights_from and not cfg.lora.enabled) else src
    try:
        model = auto.from_pretrained(full_src, **kw)
    except (OSError, ValueError) as e:
        raise _load_error(full_src, e, cfg.model.allow_pickle) from None
    gc_kwargs = {"use_reentrant": False}
    if cfg.lora.enabled:
        try:
            from peft import LoraConfig as PeftLoraConfig
            from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
        except ImportError:
            raise UserError("LoRA training needs peft: pip install lightalign[train]") from None
        if cfg.lora.load_in_4bit:  # upcasts norms, enables input grads for checkpointing
            model = prepare_model_for_kbit_training(model, cfg.training.gradient_checkpointing, gc_kwargs)
        if weights_from:
            model = PeftModel.from_pretrained(model, weights_from, is_trainable=True)
        else:
            task = "SEQ_2_SEQ_LM" if arch == "seq2seq" else "CAUSAL_LM"
            model = get_peft_model(model, PeftLoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules, task_type=task))
    if cfg.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if cfg.lora.enabled:
            model.enable_input_require_grads()
        model.config.use_cache = False
    return model, tokenizer, arch


# ------------------------------------------------------------------------------------ stages
def _run_stage(cfg: Config, model, tokenizer, arch: str, rows: list, eval_rows: list | None, stage_dir: Path,
               epochs: float, lr: float) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    t = cfg.training
    stage_dir.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(stage_dir / "checkpoints"), num_train_epochs=epochs, learning_rate=lr,
        lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim, logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps > 0 else "no", save_steps=max(t.save_steps, 1), save_total_limit=1,
        eval_strategy="epoch" if eval_rows else "no", report_to=[], seed=t.seed, data_seed=t.seed,
        bf16=_dtype(cfg) == torch.bfloat16, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
    )
    tokenizer.padding_side = "right"  # training pads on the right; batched generation pads on the left
    collator = DataCollatorForSeq2Seq(tokenizer, model=model if arch == "seq2seq" else None,
                                      label_pad_token_id=-100, padding=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_rows or None,
                      data_collator=collator)
    last = get_last_checkpoint(str(stage_dir / "checkpoints")) if (stage_dir / "checkpoints").exists() else None
    result = trainer.train(resume_from_checkpoint=last)
    log = trainer.state.log_history
    return {"train_loss": result.training_loss, "rows": len(rows), "steps": trainer.state.global_step,
            "seconds": result.metrics.get("train_runtime"),
            "first_loss": next((h["loss"] for h in log if "loss" in h), None),
            "final_loss": next((h["loss"] for h in reversed(log) if "loss" in h), None),
            "eval_loss": next((h["eval_loss"] for h in reversed(log) if "eval_loss" in h), None)}


def _merged(cfg: Config, adapter_dir: Path, arch: str):
    """The adapter folded into a full-precision copy of the base (never into 4-bit weights, which
    loses quality): a plain model that loads with the core dependencies only."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    base = auto.from_pretrained(cfg.model.name_or_path, dtype=_dtype(cfg), trust_remote_code=cfg.model.trust_remote_code,
                                use_safetensors=None if cfg.model.allow_pickle else True)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def _save(model, tokenizer, out: Path, cfg: Config, arch: str, extra: dict) -> None:
    from lightalign.aligner.model import CONFIG_NAME, aligner_config
    from lightalign.aligner.templates import get_template
    from lightalign.io import write_json

    adapter = cfg.lora.enabled and not cfg.lora.merge
    if cfg.lora.enabled and cfg.lora.merge:
        model.save_pretrained(out / "adapter", safe_serialization=True)  # kept: small, and the raw result
        model = _merged(cfg, out / "adapter", arch)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    base = cfg.model.name_or_path
    if Path(base).exists():
        base = str(Path(base).resolve())
    write_json(out / CONFIG_NAME, aligner_config(get_template(cfg.template), arch, base, cfg.max_new_tokens,
                                                 {"adapter": adapter, "copy_bias": cfg.copy_bias,
                                                  "copy_min_prob": cfg.copy_min_prob, **extra}))


def train(cfg: Config) -> Path:
    from transformers import set_seed

    from lightalign.aligner.data import identity_rows, load_triples
    from lightalign.aligner.templates import get_template
    from lightalign.io import write_json

    out = Path(cfg.output_dir)
    if (out / "train_log.json").exists():
        print(f"{out}: already trained (delete the folder to train again)")
        return out
    set_seed(cfg.training.seed)
    template = get_template(cfg.template)
    triples = load_triples(cfg.data.path, cfg.data.format, cfg.data.prefer, cfg.data.max_rows)
    eval_triples = load_triples(cfg.data.eval_path, cfg.data.format, cfg.data.prefer) if cfg.data.eval_path else None
    log: dict = {"template": template.name, "rows": len(triples)}
    started = time.time()

    id_dir = out / "identity"
    id_done = (id_dir / "stage_done.json").exists()
    model, tokenizer, arch = load_model(cfg, weights_from=str(id_dir) if id_done else None)
    if template.chat and arch == "seq2seq":
        raise UserError(f"template {template.name!r} uses a chat template: pick a plain one for a seq2seq model")

    def encoded(rows):
        enc, skipped = encode_rows(rows, tokenizer, template, arch, cfg.data.max_length)
        if skipped:
            print(f"skipped {skipped} rows longer than data.max_length={cfg.data.max_length}")
        if not enc:
            raise UserError(f"{cfg.data.path}: no row fits data.max_length={cfg.data.max_length}")
        return enc

    eval_rows = encoded(eval_triples) if eval_triples else None
    if cfg.identity.share > 0:
        if id_done:
            log["identity"] = json.loads((id_dir / "stage_done.json").read_text())
        else:
            ident = identity_rows(triples, cfg.identity.share, cfg.training.seed)
            log["identity"] = _run_stage(cfg, model, tokenizer, arch, encoded(ident), None, id_dir,
                                         cfg.identity.epochs, cfg.identity.lr or cfg.training.lr)
            model.save_pretrained(id_dir, safe_serialization=True)  # stage 2 resumes from here after a crash
            write_json(id_dir / "stage_done.json", log["identity"])
    log["correction"] = _run_stage(cfg, model, tokenizer, arch, encoded(triples), eval_rows, out / "correction",
                                   cfg.training.epochs, cfg.training.lr)
    log["seconds"] = round(time.time() - started, 1)
    _save(model, tokenizer, out, cfg, arch, {"train": {k: log[k] for k in ("rows", "template")}})
    write_json(out / "train_log.json", log)  # written last: its presence means "complete"
    import shutil

    for stage in ("identity", "correction"):  # mid-stage checkpoints are only for resuming
        shutil.rmtree(out / stage / "checkpoints", ignore_errors=True)
    return out
