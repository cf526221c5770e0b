"""QLoRA supervised fine-tuning recipe: `lightalign train recipes/minilab/sft.yaml`.

TRL's SFTTrainer does the work: conversational prompt/completion rows go through the tokenizer's
chat template, the loss is on the completion only (its EOS included), and mixed lengths are packed
best-fit-decreasing into padding-free batches (`packing: true`), so almost no compute goes to pad.
We add: the 4-bit base and its safety checks, an audit of the label mask, committed checkpoints
and resume, and the run's metrics.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lightalign import loading
from lightalign.adapters import labels
from lightalign.adapters.batching import PackedRowsCollator, group_packed_rows
from lightalign.errors import UserError
from lightalign.training import policy, runs
from lightalign.training.sections import DataSection, LoraSection, ModelSection, TrainingSection, validate_resume


@dataclass
class SftSection:
    # best-fit-decreasing packing into rows of data.max_length; with FlashAttention the batch is
    # flattened padding-free (TRL), otherwise rows stay apart with per-sequence position_ids (batching.py)
    packing: bool = True
    padding_free: bool = False    # TRL padding-free without packing (needs FlashAttention; max_length not enforced)


@dataclass
class Config:
    model: ModelSection
    data: DataSection
    output_dir: str
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    sft: SftSection = field(default_factory=SftSection)
    resume: str = "auto"          # auto: last complete checkpoint in output_dir | never | a checkpoint folder

    def validate(self):
        validate_resume(self.resume)


def build_trainer(cfg: Config, resume_from: str | None = None, callbacks=(), in_order: bool = False):
    """Everything up to `trainer.train()`: returns (trainer, tokenizer, extras). `in_order`: rows in file
    order, unshuffled and unpacked, so the first N rows are what the run has seen after N / global batch
    steps (`lightalign elasticity` saves the model at such steps)."""
    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from lightalign.adapters.datasets import load_rows, to_dataset

    set_seed(cfg.training.seed)
    dtype = loading.compute_dtype(cfg.model.compute_dtype)
    tokenizer = loading.load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code, cfg.model.revision)
    rows, data_stats = load_rows(cfg.data, "sft")
    runs.report_data_stats(data_stats, cfg.data.path or cfg.data.hub_id)
    model, peft_config = policy.build_policy(cfg, tokenizer)
    padding_free_only = cfg.sft.padding_free and not cfg.sft.packing
    args = runs.training_arguments(
        cfg.training, runs.checkpoint_dir(cfg.output_dir), dtype, SFTConfig,
        max_length=None if padding_free_only else cfg.data.max_length,
        packing=cfg.sft.packing, packing_strategy="bfd", padding_free=cfg.sft.padding_free,
        completion_only_loss=True, trust_remote_code=cfg.model.trust_remote_code,
        **({"train_sampling_strategy": "sequential"} if in_order else {}),
    )
    commit, recorder = runs.make_callbacks(resume_from)
    trainer = SFTTrainer(model=model, args=args, train_dataset=to_dataset(rows), processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[commit, recorder, *callbacks])
    if dtype == torch.float32:
        policy.cast_trainable(trainer.model, torch.float32)
    try:
        audit = labels.audit(trainer.train_dataset, tokenizer, max_length=cfg.data.max_length)
    except ValueError as e:
        raise UserError(f"{cfg.data.path or cfg.data.hub_id}: label mask check failed: {e}") from None
    extras = {"data": data_stats, "label_audit": audit}
    if cfg.sft.packing and not (cfg.model.attn_implementation or "").startswith("flash"):
        trainer.data_collator = PackedRowsCollator(tokenizer.pad_token_id)
        extras["processed_saved_by_grouping"] = group_packed_rows(trainer, runs.grouping_batch(cfg.training),
                                                                    cfg.training.seed)
    counter = runs.CountingCollator(trainer.data_collator, tokenizer.pad_token_id)
    trainer.data_collator = counter
    recorder.counter, recorder.trainer = counter, trainer
    return trainer, tokenizer, {"recorder": recorder, "extras": extras}


def train(cfg: Config, callbacks=(), in_order: bool = False) -> Path:
    started = time.perf_counter()
    if in_order and cfg.sft.packing:
        raise UserError("sft.packing: training rows in file order needs sft.packing=false (packing mixes rows)")
    out_dir, resume_from, done = runs.prepare_run(cfg, "sft")
    if done:
        runs.notice(f"{out_dir}: already complete (metrics.json present); skipping")
        return out_dir
    runs.announce_resume(resume_from, f"{out_dir}: ")
    trainer, tokenizer, parts = build_trainer(cfg, resume_from, callbacks, in_order)
    trainer.train(resume_from_checkpoint=resume_from)
    extras = {**parts["extras"], "resumed_from": resume_from}
    return runs.finish(trainer, tokenizer, out_dir, "sft", started, parts["recorder"], extras,
                       base_name=cfg.model.name_or_path)
