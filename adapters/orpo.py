"""QLoRA ORPO recipe (reference-free preference alignment): `lightalign train recipes/minilab/orpo.yaml`.

ORPO (Hong et al. 2024) adds an odds-ratio penalty on the rejected answer to the SFT loss on the
chosen one, so it needs no reference pass at all: the lowest-memory preference method, and one
stage instead of SFT then DPO. TRL 1.16 ships it as trl.experimental.orpo.ORPOTrainer.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lightalign import loading
from lightalign.adapters.batching import group_preference_rows
from lightalign.training import policy, runs
from lightalign.training.sections import (DataSection, LoraSection, ModelSection, TrainingSection, refuse_length_grouping,
                                         validate_resume)


@dataclass
class OrpoSection:
    beta: float = 0.1   # weight of the odds-ratio term (lambda in the paper)
    group_by_length: bool = True   # batches of similar-length pairs: less pad (see batching.py)

    def validate(self):
        if self.beta <= 0:
            raise ValueError(f"orpo.beta must be > 0, got {self.beta}")


@dataclass
class Config:
    model: ModelSection
    data: DataSection
    output_dir: str
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    orpo: OrpoSection = field(default_factory=OrpoSection)
    resume: str = "auto"

    def validate(self):
        validate_resume(self.resume)
        refuse_length_grouping(self.training, "preference pairs")


def build_trainer(cfg: Config, resume_from: str | None = None, callbacks=()):
    import torch
    from transformers import set_seed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the experimental-API notice
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from lightalign.adapters.datasets import load_rows, to_dataset

    set_seed(cfg.training.seed)
    dtype = loading.compute_dtype(cfg.model.compute_dtype)
    tokenizer = loading.load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code, cfg.model.revision)
    rows, data_stats = load_rows(cfg.data, "preference")
    runs.report_data_stats(data_stats, cfg.data.path or cfg.data.hub_id)
    model, peft_config = policy.build_policy(cfg, tokenizer)
    args = runs.training_arguments(
        cfg.training, runs.checkpoint_dir(cfg.output_dir), dtype, ORPOConfig,
        max_length=cfg.data.max_length, beta=cfg.orpo.beta, trust_remote_code=cfg.model.trust_remote_code,
    )
    commit, recorder = runs.make_callbacks(resume_from)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=to_dataset(rows), processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[commit, recorder, *callbacks])
    if dtype == torch.float32:
        policy.cast_trainable(trainer.model, torch.float32)
    extras = {"data": data_stats}
    if cfg.orpo.group_by_length:
        t = cfg.training
        extras["processed_saved_by_grouping"] = group_preference_rows(trainer, runs.grouping_batch(t), t.seed)
    counter = runs.CountingCollator(trainer.data_collator, tokenizer.pad_token_id)
    trainer.data_collator = counter
    recorder.counter, recorder.trainer = counter, trainer
    return trainer, tokenizer, {"recorder": recorder, "extras": extras}


def train(cfg: Config, callbacks=()) -> Path:
    started = time.perf_counter()
    out_dir, resume_from, done = runs.prepare_run(cfg, "orpo")
    if done:
        runs.notice(f"{out_dir}: already complete (metrics.json present); skipping")
        return out_dir
    runs.announce_resume(resume_from, f"{out_dir}: ")
    trainer, tokenizer, parts = build_trainer(cfg, resume_from, callbacks)
    trainer.train(resume_from_checkpoint=resume_from)
    extras = {**parts["extras"], "resumed_from": resume_from}
    return runs.finish(trainer, tokenizer, out_dir, "orpo", started, parts["recorder"], extras,
                       base_name=cfg.model.name_or_path)
