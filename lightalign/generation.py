"""Batched chat generation shared by the lab, eval, the app and the connectors.

Left padding for batched decoding (right padding would put pad tokens between prompt and
answer); the chat template already holds BOS, so the prompt is encoded without special tokens.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence


def chat_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def context_length(config) -> int | None:
    """How many positions a model reads, from its config (None when the config does not say)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextmanager
def left_padding(tokenizer):
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = old


def generate_texts(model, tokenizer, texts: Sequence[str], max_new_tokens: int = 64,
                   batch_size: int = 32, progress: bool = False, desc: str = "generating",
                   **gen_kwargs) -> list[str]:
    """Greedy (unless gen_kwargs say otherwise) continuation of already-templated `texts`."""
    import torch
    from tqdm.auto import tqdm

    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set one distinct from EOS")
    gen_kwargs.setdefault("do_sample", False)
    out: list[str] = []
    device = next(model.parameters()).device
    batches = range(0, len(texts), batch_size)
    with left_padding(tokenizer), torch.inference_mode():
        for start in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            chunk = list(texts[start:start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **gen_kwargs)
            new = ids[:, enc["input_ids"].shape[1]:]
            out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def generate_chat(model, tokenizer, prompts: Sequence[str], system: str | None = None, **kwargs) -> list[str]:
    """Answer each user prompt with the model's chat template (greedy by default)."""
    return generate_texts(model, tokenizer, [chat_prompt(tokenizer, p, system) for p in prompts], **kwargs)
