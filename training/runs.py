"""What every training run shares: its folder, resume, committed checkpoints, metrics, final save.

Run folder (`output_dir`):
    run_config.json            the recipe as validated (a resume with a different recipe is refused)
    checkpoints/checkpoint-N/  Trainer checkpoints: weights, optimizer, scheduler, RNG, data position
                               + checkpoint_complete.json, written last (it also carries the run's
                               token and time totals so far, so a resumed run reports whole-run totals)
    adapter_config.json, adapter_model.safetensors (or model.safetensors), tokenizer files
    metrics.json               written last: its presence means the run is complete

transformers writes checkpoint files one by one into their final folder, so a run killed while
saving leaves a half checkpoint that `get_last_checkpoint` would happily pick. We add a commit
marker (fsync'd files, then an atomically written marker) and resume only from marked ones.
The Aligner trains in two stages, each with its own `checkpoints/` folder under the run folder.

Under `accelerate launch` (several processes) rank 0 alone writes all of the above and prints the
notices; the ranks meet where one reads what another wrote (see lightalign.training.distributed).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from lightalign import model_sources
from lightalign.errors import UserError
from lightalign.io import make_dir, read_json_object, write_json
from lightalign.schemas import problems
from lightalign.training import distributed
from lightalign.training.sections import check_bounds

COMPLETE_MARKER = "checkpoint_complete.json"
METRICS = "metrics.json"
RUN_CONFIG = "run_config.json"
STAGE_DONE = "stage_done.json"  # a finished stage of a multi-stage run (the Aligner's identity stage)
# Keys a resumed run may change without changing what it trains.
RESUME_SAFE = {"resume", "training.max_steps", "training.epochs", "training.logging_steps",
               "training.save_steps", "training.save_total_limit", "training.progress", "training.report_to"}
# Keys added since runs were first written, with the value that reproduces the older runs: a run folder
# written before a key existed resumes (or is seen complete) when the key keeps that value.
ADDED_KEYS = {"model.quant_storage": "uint8", "model.gguf_file": None, "training.sampling": "random"}
CURVE_KEYS = ("learning_rate", "rewards/accuracies", "rewards/margins", "grad_norm")

# TRL and PEFT read `model.is_gradient_checkpointing`, which transformers renamed: a notice for those
# libraries to act on, not for our users.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
# PEFT looks for the base's config under the adapter's base name to see whether the vocabulary grew, and
# cannot read a `pkg:` name (our loader resolves it); the loader reuses an existing pad token before adding one.
warnings.filterwarnings("ignore", message=r"Could not find a config file in pkg:", category=UserWarning)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# what a finished run leaves beside metrics.json: an adapter, a model, or an inspector's head
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "score.safetensors")


def is_complete(out_dir: str | Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / METRICS).exists() and any((out_dir / name).exists() for name in WEIGHTS)


def read_metrics(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / METRICS).read_text(encoding="utf-8"))


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


def resumable_checkpoint(run_dir: str | Path) -> str | None:
    """The last committed checkpoint under `run_dir`/checkpoints (torn ones are dropped first), chosen
    on rank 0 and the same on every rank."""
    return distributed.main_first(_resumable_checkpoint, run_dir)


def _resumable_checkpoint(run_dir: str | Path) -> str | None:
    drop_torn_checkpoints(run_dir)
    ckpt = last_complete_checkpoint(run_dir)
    return str(ckpt) if ckpt else None


def announce_resume(checkpoint: str | None, what: str = "") -> None:
    if checkpoint and distributed.is_main():
        step = json.loads((Path(checkpoint) / COMPLETE_MARKER).read_text(encoding="utf-8")).get("step")
        print(f"{what}resuming from {checkpoint} (step {step})", flush=True)


def prepare_run(cfg, method: str) -> tuple[Path, str | None, bool]:
    """Return (out_dir, checkpoint to resume from or None, already_complete): decided (and the run
    folder written) on rank 0, the same answer on every rank. Sizes the model or the machine cannot take
    are refused first (sections.check_bounds), before anything is written or loaded."""
    check_bounds(cfg, method)
    return distributed.main_first(_prepare_run, cfg, method)


def _prepare_run(cfg, method: str) -> tuple[Path, str | None, bool]:
    out_dir = make_dir(cfg.output_dir, "the output_dir")
    config = {"method": method, **asdict(cfg)}
    saved_path = out_dir / RUN_CONFIG
    if cfg.resume == "never":
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / METRICS).unlink(missing_ok=True)
        for ckpts in out_dir.glob("**/checkpoints"):  # the user asked to start over
            shutil.rmtree(ckpts, ignore_errors=True)
        write_json(saved_path, config)
        return out_dir, None, False
    if saved_path.exists():
        try:
            saved = _flatten(read_json_object(saved_path, "run config"))
        except UserError as e:  # torn or hand-edited
            raise UserError(f"{e}; delete it or set resume=never") from None
        now = _flatten(config)
        changed = sorted(k for k in set(saved) | set(now)
                         if saved.get(k, ADDED_KEYS.get(k)) != now.get(k) and k not in RESUME_SAFE)
        resumable = any(out_dir.glob(f"**/checkpoints/*/{COMPLETE_MARKER}")) or any(out_dir.glob(f"*/{STAGE_DONE}"))
        if changed and (is_complete(out_dir) or resumable):
            raise UserError(f"output_dir {out_dir} holds a run of a different recipe (changed: {', '.join(changed)}); "
                            "pick another output_dir or set resume=never to start over")
    if cfg.resume == "auto":
        if is_complete(out_dir) and saved_path.exists():
            return out_dir, None, True
        ckpt = _resumable_checkpoint(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(saved_path, config)
        return out_dir, ckpt, False
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


def loss_curve(log_history: list[dict]) -> list[dict]:
    """The run's logged losses from the Trainer's log history, which a resume restores from the
    checkpoint: the curve covers the whole run, not only the last segment."""
    curve = []
    for logs in log_history:
        if "loss" in logs:
            point = {"step": logs["step"], "loss": float(logs["loss"])}
            for k in CURVE_KEYS:
                if k in logs:
                    point[k.replace("/", "_")] = float(logs[k])
            curve.append(point)
    return curve


class CountingCollator:
    """Wraps the trainer's collator to count real vs padded tokens (tokens/s and padding waste)."""

    def __init__(self, inner, pad_token_id: int):
        self.inner, self.pad_token_id = inner, pad_token_id
        self.batches: list[tuple[int, int]] = []  # (real, total) per collated batch since training began

    @property
    def real(self) -> int:
        return sum(r for r, _ in self.batches)

    @property
    def total(self) -> int:
        return sum(t for _, t in self.batches)

    def __call__(self, examples):
        batch = self.inner(examples)
        real = total = 0
        for key, ids in batch.items():
            if not key.endswith("input_ids") or key.startswith("prompt_") or not hasattr(ids, "numel"):
                continue
            mask = batch.get(key.replace("input_ids", "attention_mask"))
            real += int(mask.sum()) if mask is not None else int((ids != self.pad_token_id).sum())
            total += int(ids.numel())
        self.batches.append((real, total))
        return batch


def make_callbacks(resume_from: str | None = None):
    """(commit, recorder): commit marks each saved checkpoint complete, with the run's totals so far;
    recorder times the run and carries the totals of the segments before a resume."""
    from transformers import TrainerCallback

    class RecordMetrics(TrainerCallback):
        def __init__(self):
            self.started = None
            self.start_step = 0
            self.counter: CountingCollator | None = None  # reset at train begin: reference precompute doesn't count
            self.trainer = None  # set by the recipe: the loss summed so far lives in the Trainer
            self.finished = False
            before = {}
            if resume_from:
                before = json.loads((Path(resume_from) / COMPLETE_MARKER).read_text(encoding="utf-8"))
            self.before = {k: before.get(k) or 0 for k in ("tokens", "processed_tokens", "train_seconds", "loss_sum")}

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.start_step = state.global_step
            if self.counter is not None:
                self.counter.batches.clear()

        def on_train_end(self, args, state, control, **kwargs):
            self.finished = True

        def totals(self, batches: int | None = None) -> dict:
            """Whole-run totals. With several processes every rank must call this (the token counts
            and the loss not logged yet are summed over the ranks)."""
            counted = (self.counter.batches if self.counter else [])[:batches]
            seconds = time.perf_counter() - self.started if self.started else 0.0
            logged, pending = self.segment_loss()
            real, processed, pending = distributed.total([sum(r for r, _ in counted), sum(t for _, t in counted),
                                                          pending])
            return {"tokens": self.before["tokens"] + int(real),
                    "processed_tokens": self.before["processed_tokens"] + int(processed),
                    "train_seconds": self.before["train_seconds"] + seconds,
                    "loss_sum": self.before["loss_sum"] + (logged + pending / distributed.world_size())}

        def segment_loss(self) -> tuple[float, float]:
            """The per-step losses of this segment, summed as Trainer sums them for its mean
            (`train_loss` = their sum / steps trained): (logged windows, already averaged over the
            ranks; this rank's window not logged yet)."""
            t = self.trainer
            if t is None:
                return 0.0, 0.0
            pending = getattr(t, "_tr_loss", None)
            pending = float(pending.item()) if pending is not None else 0.0
            logged = float(getattr(t, "_total_loss_scalar", 0.0))
            if self.finished:  # at the end Trainer adds the window not logged to its total (and keeps it)
                logged -= pending
            return logged, pending

    class CommitCheckpoint(TrainerCallback):
        """Called by Trainer after every file of checkpoint-N is written: mark it complete."""

        def __init__(self, recorder):
            self.recorder = recorder

        def on_save(self, args, state, control, **kwargs):
            # the dataloader may have collated a batch ahead: count only the steps taken
            done = (state.global_step - self.recorder.start_step) * args.gradient_accumulation_steps
            totals = self.recorder.totals(done)
            distributed.barrier()  # every rank has written its part (its RNG state) of the checkpoint
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if distributed.is_main() and ckpt.is_dir():
                _fsync_tree(ckpt)
                write_json(ckpt / COMPLETE_MARKER, {"step": state.global_step, "time": time.time(), **totals})

    recorder = RecordMetrics()
    return CommitCheckpoint(recorder), recorder


def training_arguments(training, checkpoints: Path, dtype, config_cls, **extra):
    """The TrainingArguments fields every recipe sets the same way (device, precision, saving,
    trackers); `extra` adds the method's own fields or overrides these (the Aligner's stages)."""
    import torch

    t = training
    kwargs = dict(
        output_dir=str(checkpoints),
        num_train_epochs=t.epochs, max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
        activation_checkpointing=t.gradient_checkpointing,  # transformers' new name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy=t.sampling, seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps,
        save_strategy="steps" if t.save_steps > 0 else "no", save_steps=max(t.save_steps, 1),
        save_total_limit=t.save_total_limit, report_to=t.report_to,
        dataloader_num_workers=0, disable_tqdm=not t.progress, remove_unused_columns=True,
    )
    kwargs.update(extra)
    return config_cls(**kwargs)


def name_base(model, out_dir: Path, base_name: str, write: bool = True) -> None:
    """Point the adapter's base_model_name_or_path at a base plain PEFT loads (model_sources.record_base:
    the dequantized folder of a GGUF or pkg: base, whose original spelling lightalign records beside it)."""
    name = model_sources.record_base(out_dir if write else None, base_name)
    for peft_cfg in model.peft_config.values():
        peft_cfg.base_model_name_or_path = name


def save_model(model, tokenizer, out_dir: Path, base_name: str | None = None) -> None:
    """The trained adapter (PEFT format) or full model, safetensors, + its tokenizer (rank 0 only)."""
    if not distributed.is_main():
        return
    if hasattr(model, "peft_config"):
        if base_name:  # an adapter continued from another run must name the base it was trained on here
            name_base(model, out_dir, base_name)
        # DPO from an SFT adapter keeps a frozen copy named "ref"; only the trained one is the result
        model.save_pretrained(str(out_dir), selected_adapters=["default"], safe_serialization=True)
    else:  # full fine-tune
        model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def run_metrics(trainer, recorder, method: str, started: float) -> dict:
    """Whole-run figures of a finished trainer (earlier segments included after a resume); a
    collective call under several processes (every rank calls it)."""
    model = trainer.model
    totals = recorder.totals()
    curve = loss_curve(trainer.state.log_history)
    seconds = totals["train_seconds"]
    return {
        "method": method,
        "global_step": trainer.state.global_step,
        "train_loss": curve[-1]["loss"] if curve else None,
        # the whole run's mean step loss, segments before a resume included
        "train_loss_mean": totals["loss_sum"] / trainer.state.global_step if trainer.state.global_step else None,
        "loss_curve": curve,
        "tokens": totals["tokens"],
        "processed_tokens": totals["processed_tokens"],
        "padding_waste": ((totals["processed_tokens"] - totals["tokens"]) / totals["processed_tokens"]
                          if totals["processed_tokens"] else None),
        "train_seconds": seconds if recorder.started else None,
        "tokens_per_second": totals["tokens"] / seconds if seconds else None,
        "wall_seconds": time.perf_counter() - started,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "all_params": sum(p.numel() for p in model.parameters()),
        # training.batch_size is per process: one optimizer step sees batch_size x grad_accum x world_size
        "world_size": trainer.args.world_size,
        "global_batch": trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
        * trainer.args.world_size,
    }


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    """metrics.json, written last by rank 0: its presence marks the run complete (`is_complete`).
    Returns once it is written, on every rank."""
    if distributed.is_main():
        write_json(Path(out_dir) / METRICS, {**metrics, **peak_memory()})
    distributed.barrier()
    return Path(out_dir)


def finish(trainer, tokenizer, out_dir: Path, method: str, started: float, recorder, extra: dict,
           base_name: str | None = None) -> Path:
    """Save the trained adapter (PEFT format, safetensors) and write metrics.json last."""
    if getattr(trainer, "is_fsdp_enabled", False):
        save_sharded(trainer, tokenizer, out_dir, base_name)
    else:
        save_model(trainer.model, tokenizer, out_dir, base_name)
    return write_metrics(out_dir, {**run_metrics(trainer, recorder, method, started), **extra})


def save_sharded(trainer, tokenizer, out_dir: Path, base_name: str | None = None) -> None:
    """FSDP: gather the full adapter state dict (a collective call: every rank) and let rank 0 write it."""
    trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    if base_name and getattr(trainer.model, "peft_config", None):
        name_base(trainer.model, out_dir, base_name, write=distributed.is_main())
    trainer.save_model(str(out_dir))
    if distributed.is_main():
        tokenizer.save_pretrained(str(out_dir))


def notice(message: str) -> None:
    """A line on stdout, printed once (by rank 0) however many processes train."""
    if distributed.is_main():
        print(message, flush=True)


def grouping_batch(training) -> int:
    """Rows per global batch: length-grouped batches are cut at this size so that a run on N processes
    (each taking `batch_size` consecutive rows of the batch) steps through the same global batches as
    one process with N x batch_size."""
    return training.batch_size * distributed.world_size()


def report_data_stats(stats: dict, source: str) -> None:
    """Say on stderr what loading dropped (malformed rows, rows skipped by reason), naming the source."""
    if not distributed.is_main():
        return
    for line in problems(stats):
        print(f"{source}: {line}", file=sys.stderr, flush=True)
