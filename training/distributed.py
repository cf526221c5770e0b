"""Several training processes (`accelerate launch`): who writes, and where the ranks wait for each other.

transformers' Trainer already runs DDP / FSDP under `accelerate launch` (it shards the batches and
averages the gradients). The run folder around it (run_config.json, commit markers, metrics.json,
the final save) is ours: rank 0 writes it, the other ranks wait at a barrier where they would
otherwise read a half-written state, and decisions taken on rank 0 (which checkpoint to resume
from) are broadcast so every rank resumes from the same one. A single process (no WORLD_SIZE in the
environment) never initialises torch.distributed: every helper here is then a no-op.
"""

from __future__ import annotations

import os

from lightalign.errors import UserError


def world_size() -> int:
    """Processes in the job, from the launcher's environment (torchrun / accelerate launch set it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _group():
    """torch.distributed, joined through accelerate's process state (gloo on CPU, nccl on GPUs)
    the way the Trainer joins it, if nothing has joined yet."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    return dist


def _device():
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        _group().barrier()


def from_main(value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    _group().broadcast_object_list(box, src=0, device=_device())
    return box[0]


def total(values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (each rank counts only the batches it collated)."""
    if world_size() == 1:
        return values
    import torch

    dist = _group()
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def main_first(fn, *args, **kwargs):
    """Run `fn` on rank 0 and hand its result to every rank; an error on rank 0 is raised on every
    rank (the others would otherwise wait for a result forever). `fn` itself must not communicate:
    the other ranks are waiting for this one broadcast."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    result = error = None
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            error = e
    result, failed = from_main((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if failed is not None:
        raise UserError(f"rank 0: {failed}")
    return result
