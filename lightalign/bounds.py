"""Values that cannot hurt: size-like config values bounded by what the model and the machine can take.

A length past the model's context length (config.json max_position_embeddings) buys nothing and some
libraries allocate by it up front (TRL's packing built a segment tree of data.max_length slots: 1e9 had
the kernel kill the run); a batch whose predicted memory exceeds the machine's is refused before loading;
counts with no model to measure them by (retries, resamples, queue lengths, waits) have a fixed ceiling far
above any sensible setting. Each refusal is one line naming the field. Configs call these from their
validation, once per concept: recipes in training.sections.check_bounds, eval in evaluation.config.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.errors import UserError
from lightalign.io import read_json_object

GIB = 1024 ** 3
MAX_BATCH = 65_536  # rows per forward pass; memory bounds a batch further once the model is known
MAX_LENGTH = 2**21  # tokens in one sequence, for models whose config does not state a context length


def model_config(name_or_path: str, filename: str = "config.json") -> dict | None:
    """config.json (or another small JSON file beside it) of a model without loading it: a local folder, a
    GGUF or pkg: source (its dequantized copy, which loading makes anyway), or a hub id already in the local
    cache; None when none is at hand."""
    from lightalign.model_sources import resolve

    path = Path(resolve(name_or_path)).expanduser() / filename
    if path.is_file():
        return read_json_object(path, filename)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(name_or_path), filename)
        return read_json_object(cached, filename) if isinstance(cached, str) else None
    except Exception:  # not a hub id, no cache: nothing to bound by
        return None


def context_length(config: dict | None) -> int | None:
    """Positions the model reads (lightalign.generation.context_length over a config.json mapping)."""
    from types import SimpleNamespace

    from lightalign.generation import context_length as of_config

    return of_config(SimpleNamespace(**config)) if config else None


def model_context(name_or_path: str, config: dict | None) -> int | None:
    """The model's context length: its config's, else its tokenizer's model_max_length when that is a real
    number (transformers writes 1e30 for "not set"); None when neither says."""
    context = context_length(config)
    if context is not None:
        return context
    try:
        tokenizer = model_config(name_or_path, "tokenizer_config.json") or {}
    except UserError:  # a tokenizer_config.json that is no JSON object: loading will say so
        return None
    value = tokenizer.get("model_max_length")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_LENGTH else None


def hidden_size(config: dict | None) -> int | None:
    """Width of the model's hidden states (Llama hidden_size, T5 d_model, GPT-2 n_embd), None when unknown."""
    for name in ("hidden_size", "d_model", "n_embd"):
        value = (config or {}).get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_rank(value: int | None, field: str, config: dict | None, model: str) -> None:
    """A LoRA rank within the model's hidden size: every adapted linear layer of a transformer has the hidden
    size as one side, so a higher rank adds parameters (and memory) but no expressiveness."""
    width = hidden_size(config)
    if value is None or width is None or value <= width:
        return
    raise UserError(f"{field}={value} is more than {model} can use: at most {width} (its hidden size; "
                    "a LoRA update's rank cannot exceed it)")


def check_length(value: int | None, field: str, context: int | None, model: str, allowance: int = 0) -> None:
    """`value` (+ `allowance` tokens the same sequence needs anyway) within the model's context length."""
    if value is None or context is None or value + allowance <= context:
        return
    room = f"{context - allowance} (its context of {context} minus {allowance} for the prompt)" if allowance \
        else str(context)
    raise UserError(f"{field}={value} is longer than {model} reads: at most {room} tokens")


def memory_budget() -> tuple[int, str]:
    """(bytes, what) one process may use at most: the first GPU's memory, else this machine's RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory, "the GPU's memory"
    except ImportError:
        pass
    try:
        import psutil

        return psutil.virtual_memory().total, "this machine's RAM"
    except ImportError:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"


def check_memory(need_bytes: float, fields: str, advice: str) -> None:
    """Refuse a setting whose predicted peak exceeds the memory there is (it would be killed mid-run)."""
    budget, what = memory_budget()
    if need_bytes > budget:
        raise UserError(f"{fields}: needs ~{need_bytes / GIB:,.1f} GiB, more than {what} "
                        f"({budget / GIB:,.1f} GiB); {advice}")


def kv_bytes_per_token(config: dict | None, dtype_bytes: int = 4) -> int | None:
    """Bytes the KV cache holds per token of a decoder (keys and values of every layer)."""
    try:
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        kv_heads = config.get("num_key_value_heads") or heads
        return 2 * config["num_hidden_layers"] * kv_heads * head_dim * dtype_bytes
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def at_most(obj, where: str, **ceilings) -> None:
    """Each named value of `obj` (None: unset) must be <= its ceiling: ValueError naming it (configs turn
    that into a one-line UserError with the file's name)."""
    for name, high in ceilings.items():
        value = getattr(obj, name)
        if value is not None and value > high:
            raise ValueError(f"{where}{name} must be <= {high:,}, got {value:,}")
