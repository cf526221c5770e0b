"""The models behind the server, loaded through lightalign.aligner (the one place that loads them).

Kept to a few small functions so the server depends on the Aligner package only here.
"""

from __future__ import annotations

from pathlib import Path


def load_aligner(path: str | Path):
    """The Aligner (safetensors only, no remote code) with `correct_batch([(q, a), ...])`."""
    from lightalign.aligner import Aligner

    return Aligner.from_pretrained(path)


def load_chat_model(model_path: str | Path, adapter: str | Path | None = None):
    """(model, tokenizer) of a local transformers chat model (+ LoRA adapter), loaded by the Aligner
    package's connector (safetensors only, no remote code, the device picked for this machine).

    Only the loaded model is reused: the connector answers one-question prompts with a fixed token
    budget, while a served request carries a whole conversation and its own max_tokens.
    """
    from lightalign.aligner.connectors import LocalModelUpstream

    connector = LocalModelUpstream(str(model_path), adapter=str(adapter) if adapter else None)
    return connector.model, connector.tokenizer


def local_upstream(model_path: str | Path, adapter: str | Path | None, cfg):
    """A LocalUpstream over a transformers model; its id names the model (and adapter)."""
    from lightalign.serve.upstream import LocalUpstream, transformers_generator

    model, tokenizer = load_chat_model(model_path, adapter)
    model_id = Path(model_path).name + (f"+{Path(adapter).name}" if adapter else "")
    return LocalUpstream(transformers_generator(model, tokenizer), model_id,
                         default_max_tokens=cfg.default_max_tokens, max_tokens_limit=cfg.max_tokens_limit,
                         max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms)
