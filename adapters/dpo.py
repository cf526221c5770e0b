"""QLoRA DPO recipe: `lightalign train recipes/minilab/dpo.yaml`.

The reference model is never a second 4-bit copy of the base. TRL's DPOTrainer, given a PEFT
model and no `ref_model`, runs the reference pass on the same weights:
- a new adapter (`lora.init_from` unset): the reference is the base with the adapter disabled;
- continuing from an SFT adapter (`lora.init_from: <sft dir>`): TRL copies that adapter into a
  frozen adapter named "ref" and the reference pass switches to it, so the reference is the SFT
  model, as DPO assumes (the policy starts equal to its reference).
Both are checked by tests/test_adapters_dpo.py against independently loaded models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lightalign import loading
from lightalign.adapters.batching import group_preference_rows
from lightalign.training import policy, runs
from lightalign.training.sections import (DataSection, LoraSection, ModelSection, TrainingSection, refuse_length_grouping,
                                         validate_resume)


@dataclass
class DpoSection:
    beta: float = 0.1
    loss_type: str = "sigmoid"
    # RPO (Pang et al. 2024): add rpo_alpha x the chosen reply's token NLL to the preference loss, so the
    # policy keeps writing what it is shown as chosen instead of only pushing the rejected reply down.
    # TRL's loss_type ["<loss_type>", "sft"] with loss_weights [1, rpo_alpha]; 0 is plain DPO.
    rpo_alpha: float = 0.0
    # Reference log-probs once before training instead of one extra forward per step. Exact while the
    # reference is frozen, which it always is here.
    precompute_ref_log_probs: bool = False
    group_by_length: bool = True   # batches of similar-length pairs: less pad (see batching.py)

    def validate(self):
        if self.beta <= 0:
            raise ValueError(f"dpo.beta must be > 0, got {self.beta}")
        if not 0 <= self.rpo_alpha <= 100:
            raise ValueError(f"dpo.rpo_alpha must be in [0, 100], got {self.rpo_alpha}")

    def losses(self) -> dict:
        """TRL's loss_type / loss_weights for this section."""
        if not self.rpo_alpha:
            return {"loss_type": [self.loss_type]}
        return {"loss_type": [self.loss_type, "sft"], "loss_weights": [1.0, self.rpo_alpha]}


@dataclass
class Config:
    model: ModelSection
    data: DataSection
    output_dir: str
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    dpo: DpoSection = field(default_factory=DpoSection)
    resume: str = "auto"

    def validate(self):
        validate_resume(self.resume)
        refuse_length_grouping(self.training, "preference pairs")


def build_trainer(cfg: Config, resume_from: str | None = None, callbacks=()):
    import torch
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from lightalign.adapters.datasets import load_rows, to_dataset

    set_seed(cfg.training.seed)
    dtype = loading.compute_dtype(cfg.model.compute_dtype)
    tokenizer = loading.load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code, cfg.model.revision)
    rows, data_stats = load_rows(cfg.data, "preference")
    runs.report_data_stats(data_stats, cfg.data.path or cfg.data.hub_id)
    model, peft_config = policy.build_policy(cfg, tokenizer)
    args = runs.training_arguments(
        cfg.training, runs.checkpoint_dir(cfg.output_dir), dtype, DPOConfig,
        max_length=cfg.data.max_length, beta=cfg.dpo.beta, **cfg.dpo.losses(),
        precompute_ref_log_probs=cfg.dpo.precompute_ref_log_probs, trust_remote_code=cfg.model.trust_remote_code,
    )
    commit, recorder = runs.make_callbacks(resume_from)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=to_dataset(rows),
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[commit, recorder, *callbacks])
    if dtype == torch.float32:
        policy.cast_trainable(trainer.model, torch.float32)
        policy.restore_from_ref(trainer.model)
    extras = {"data": data_stats}
    if cfg.dpo.group_by_length:
        t = cfg.training
        extras["processed_saved_by_grouping"] = group_preference_rows(trainer, runs.grouping_batch(t), t.seed)
    counter = runs.CountingCollator(trainer.data_collator, tokenizer.pad_token_id)
    trainer.data_collator = counter
    recorder.counter, recorder.trainer = counter, trainer
    return trainer, tokenizer, {"recorder": recorder, "extras": extras}


def train(cfg: Config, callbacks=()) -> Path:
    started = time.perf_counter()
    out_dir, resume_from, done = runs.prepare_run(cfg, "dpo")
    if done:
        runs.notice(f"{out_dir}: already complete (metrics.json present); skipping")
        return out_dir
    runs.announce_resume(resume_from, f"{out_dir}: ")
    trainer, tokenizer, parts = build_trainer(cfg, resume_from, callbacks)
    trainer.train(resume_from_checkpoint=resume_from)
    extras = {**parts["extras"], "resumed_from": resume_from,
              "reference": "sft adapter (frozen copy)" if cfg.lora.init_from else "base (adapter disabled)"}
    return runs.finish(trainer, tokenizer, out_dir, "dpo", started, parts["recorder"], extras,
                       base_name=cfg.model.name_or_path)
