"""The models behind the server, loaded through lightalign.aligner (the one place that loads them).

Kept to a few small functions so the server depends on the Aligner package only here.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.serve.limits import PromptLimit, max_positions, max_token_chars


def load_aligner(path: str | Path, engine: str = "native", engine_options: dict | None = None):
    """The Aligner (safetensors only, no remote code) with `correct_batch([(q, a), ...])`, decoding in
    this process, on vLLM, or on the server that hosts it (see lightalign.aligner.engines)."""
    from lightalign.aligner import Aligner

    return Aligner.from_pretrained(path, engine=engine, engine_options=engine_options)


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
    from lightalign.serve.app import content_text
    from lightalign.serve.local_stream import StreamingGenerator
    from lightalign.serve.upstream import LocalUpstream, transformers_generator

    model, tokenizer = load_chat_model(model_path, adapter)
    model_id = Path(model_path).name + (f"+{Path(adapter).name}" if adapter else "")
    context = max_positions(model)
    # tokens past the context length are not worth generating (and a huge limit would let one request run on)
    limit = min(cfg.max_tokens_limit, context) if context else cfg.max_tokens_limit
    upstream = LocalUpstream(transformers_generator(model, tokenizer), model_id,
                             default_max_tokens=cfg.default_max_tokens, max_tokens_limit=limit,
                             max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms)
    upstream.streamer = StreamingGenerator(model, tokenizer, cfg.max_batch_size, cfg.max_wait_ms)
    if context:
        def count(messages: list[dict]) -> int:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        # room for at least one new token
        upstream.prompt_limit = PromptLimit(f"the upstream model {model_id}", context - 1, max_token_chars(tokenizer),
                                            count, chars=lambda ms: sum(len(content_text(m.get("content")))
                                                                        for m in ms))
    return upstream


def aligner_limit(aligner) -> PromptLimit | None:
    """The longest question the Aligner can read (the answer must fit beside it, or it is kept: too_long)."""
    tokenizer, context = getattr(aligner, "tokenizer", None), max_positions(aligner)
    if tokenizer is None or not context:
        return None
    return PromptLimit("the Aligner", context - 1, max_token_chars(tokenizer),
                       lambda q: len(tokenizer(q, add_special_tokens=False)["input_ids"]))


def prompt_limits(upstream, aligner) -> dict:
    """{"messages": limit on the whole conversation, "question": limit on the last user turn}."""
    limits = {"messages": getattr(upstream, "prompt_limit", None), "question": aligner_limit(aligner)}
    return {k: v for k, v in limits.items() if v is not None}
