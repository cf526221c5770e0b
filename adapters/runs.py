"""What every adapter run shares: its folder, resume, committed checkpoints, metrics, final save.

Run folder (`output_dir`):
    run_config.json            the recipe as validated (a resume with a different recipe is refused)
    checkpoints/checkpoint-N/  Trainer checkpoints: adapter, optimizer, scheduler, RNG, data position
                               + checkpoint_complete.json, written last
    adapter_config.json, adapter_model.safetensors, tokenizer files   the final adapter (PEFT format)
    metrics.json               written last: its presence means the run is complete

transformers writes checkpoint files one by one into their final folder, so a run killed while
saving leaves a half checkpoint that `get_last_checkpoint` would happily pick. We add a commit
marker (fsync'd files, then an atomically written marker) and resume only from marked ones.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from lightalign.errors import UserError
from lightalign.io import write_json

COMPLETE_MARKER = "checkpoint_complete.json"
METRICS = "metrics.json"
RUN_CONFIG = "run_config.json"
# Keys a resumed run may change without changing what it trains.
RESUME_SAFE = {"resume", "training.max_steps", "training.epochs", "training.logging_steps",
               "training.save_steps", "training.save_total_limit", "training.progress"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def is_complete(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / METRICS).exists() and ((out_dir / "adapter_model.safetensors").exists()
                                             or (out_dir / "model.safetensors").exists())


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def last_complete_checkpoint(out_dir: str | Path) -> Path | None:
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and (p / COMPLETE_MARKER).exists():
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def drop_torn_checkpoints(out_dir: str | Path) -> list[Path]:
    """Delete checkpoint folders a crash left without their commit marker: they cannot be resumed from,
    and left in place they would count towards save_total_limit and push out a complete one."""
    root = checkpoint_dir(out_dir)
    torn = [p for p in root.glob("checkpoint-*") if p.is_dir() and not (p / COMPLETE_MARKER).exists()] \
        if root.is_dir() else []
    for p in torn:
        shutil.rmtree(p)
    return torn


def prepare_run(cfg, method: str) -> tuple[Path, str | None, bool]:
    """Return (out_dir, checkpoint to resume from or None, already_complete)."""
    out_dir = Path(cfg.output_dir)
    config = {"method": method, **asdict(cfg)}
    saved_path = out_dir / RUN_CONFIG
    if cfg.resume == "never":
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / METRICS).unlink(missing_ok=True)
        shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)  # the user asked to start over
        write_json(saved_path, config)
        return out_dir, None, False
    if saved_path.exists():
        saved = _flatten(json.loads(saved_path.read_text(encoding="utf-8")))
        now = _flatten(config)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUME_SAFE)
        if changed and (is_complete(out_dir) or last_complete_checkpoint(out_dir)):
            raise UserError(f"output_dir {out_dir} holds a run of a different recipe (changed: {', '.join(changed)}); "
                            "pick another output_dir or set resume=never to start over")
    if cfg.resume == "auto":
        if is_complete(out_dir) and saved_path.exists():
            return out_dir, None, True
        drop_torn_checkpoints(out_dir)
        ckpt = last_complete_checkpoint(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(saved_path, config)
        return out_dir, (str(ckpt) if ckpt else None), False
    ckpt = Path(cfg.resume)
    if not (ckpt / COMPLETE_MARKER).exists():
        raise UserError(f"resume: {ckpt} is not a complete checkpoint (no {COMPLETE_MARKER})")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(saved_path, config)
    return out_dir, str(ckpt), False


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def peak_memory() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_allocated"}
    # ru_maxrss: KiB on Linux, bytes on macOS; the whole process's peak resident set
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_memory_bytes": int(rss), "peak_memory_kind": "cpu_peak_rss"}


def make_callbacks():
    from transformers import TrainerCallback

    class CommitCheckpoint(TrainerCallback):
        """Called by Trainer after every file of checkpoint-N is written: mark it complete."""

        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                _fsync_tree(ckpt)
                write_json(ckpt / COMPLETE_MARKER, {"step": state.global_step, "time": time.time()})

    class RecordMetrics(TrainerCallback):
        def __init__(self):
            self.curve: list[dict] = []
            self.started = None
            self.counter = None  # a CountingCollator; reset here so reference precompute passes don't count

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            if self.counter is not None:
                self.counter.real = self.counter.total = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                point = {"step": state.global_step, "loss": float(logs["loss"])}
                for k in ("learning_rate", "rewards/accuracies", "rewards/margins", "grad_norm"):
                    if k in logs:
                        point[k.replace("/", "_")] = float(logs[k])
                self.curve.append(point)

    return CommitCheckpoint(), RecordMetrics()


class CountingCollator:
    """Wraps the trainer's collator to count real vs padded tokens (tokens/s and padding waste)."""

    def __init__(self, inner, pad_token_id: int):
        self.inner, self.pad_token_id = inner, pad_token_id
        self.real = 0
        self.total = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        for key, ids in batch.items():
            if not key.endswith("input_ids") or key.startswith("prompt_") or not hasattr(ids, "numel"):
                continue
            mask = batch.get(key.replace("input_ids", "attention_mask"))
            self.real += int(mask.sum()) if mask is not None else int((ids != self.pad_token_id).sum())
            self.total += int(ids.numel())
        return batch


def training_arguments(cfg, out_dir: Path, dtype, config_cls, **extra):
    """The TrainingArguments fields every recipe sets the same way (device, precision, saving)."""
    import torch

    t = cfg.training
    return config_cls(
        output_dir=str(checkpoint_dir(out_dir)),
        num_train_epochs=t.epochs, max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not torch.cuda.is_available(),
        seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps, save_strategy="steps",
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, report_to=[],
        dataloader_num_workers=0, disable_tqdm=not t.progress, remove_unused_columns=True,
        **extra,
    )


def finish(trainer, tokenizer, out_dir: Path, method: str, started: float, counter: CountingCollator,
           recorder, extra: dict, base_name: str | None = None) -> Path:
    """Save the trained adapter (PEFT format, safetensors) and write metrics.json last."""
    model = trainer.model
    if hasattr(model, "peft_config"):
        if base_name:  # an adapter continued from another run must name the base it was trained on here
            for peft_cfg in model.peft_config.values():
                peft_cfg.base_model_name_or_path = base_name
        # DPO from an SFT adapter keeps a frozen copy named "ref"; only the trained one is the result
        model.save_pretrained(str(out_dir), selected_adapters=["default"], safe_serialization=True)
    else:  # full fine-tune
        model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    train_seconds = (time.perf_counter() - recorder.started) if recorder.started else None
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    metrics = {
        "method": method,
        "global_step": trainer.state.global_step,
        "train_loss": recorder.curve[-1]["loss"] if recorder.curve else None,
        "loss_curve": recorder.curve,
        "tokens": counter.real,
        "processed_tokens": counter.total,
        "padding_waste": (counter.total - counter.real) / counter.total if counter.total else None,
        "train_seconds": train_seconds,
        "tokens_per_second": counter.real / train_seconds if train_seconds else None,
        "wall_seconds": time.perf_counter() - started,
        "trainable_params": trainable,
        "all_params": sum(p.numel() for p in model.parameters()),
        **peak_memory(),
        **extra,
    }
    write_json(out_dir / METRICS, metrics)
    return out_dir


def load_recipe(path: str | Path, overrides: list[str] = ()):
    """Recipe YAML + `key=value` overrides -> (recipe module, validated Config), like `lightalign train`."""
    import importlib

    from lightalign.config import apply_overrides, from_dict, read_yaml
    from lightalign.train_cli import METHODS

    data = apply_overrides(read_yaml(path), list(overrides))
    method = data.pop("method", None)
    if method not in ("sft", "dpo", "orpo"):
        raise UserError(f"{path}: key 'method' must be one of sft, dpo, orpo, got {method!r}")
    module = importlib.import_module(METHODS[method])
    return module, from_dict(module.Config, data, source=str(path))
