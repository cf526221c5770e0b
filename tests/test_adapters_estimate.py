"""The memory estimator against published figures and against peaks measured here on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.adapters import GPU_RECIPES

from lightalign.adapters.estimate import GIB, KNOWN, Arch, Setup, arch_from_config, estimate, fits, weight_bytes

REPO = Path(__file__).resolve().parents[1]


def test_torchtune_llama31_8b_figures():
    """torchtune README, RTX 4090, Llama-3.1-8B, bs 2, packed 2048, LoRA r8 on q/v/output + MLP,
    activation checkpointing: QLoRA 7.4 GiB peak, LoRA (bf16 base) 16.2 GiB."""
    setup = Setup(lora_r=8, lora_targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                  lora_dropout=0.0, upcast_non_quantized=False, batch_size=2, seq_len=2048)
    qlora = estimate(KNOWN["llama-3.1-8b"], setup)["peak_bytes"] / GIB
    lora = estimate(KNOWN["llama-3.1-8b"], Setup(**{**setup.__dict__, "quantization": "none"}))["peak_bytes"] / GIB
    assert abs(qlora - 7.4) / 7.4 < 0.10, qlora
    assert abs(lora - 16.2) / 16.2 < 0.10, lora
    assert fits(estimate(KNOWN["llama-3.1-8b"], setup)["peak_bytes"], 24)[0]


@pytest.mark.parametrize("name, billions, table_gb", [("llama-2-7b", 7, 6), ("llama-2-13b", 13, 12),
                                                     ("llama-2-70b", 70, 48)])
def test_llamafactory_rule_of_thumb(name, billions, table_gb):
    """LLaMA-Factory: QLoRA needs ~x/2 GB of weights for an x-billion model; its table: 6/12/48 GB."""
    r = estimate(KNOWN[name], Setup(batch_size=1, seq_len=1024, upcast_non_quantized=False))
    assert abs(r["terms"]["base_4bit_linear"] / 1e9 - billions / 2) / (billions / 2) < 0.1
    assert billions / 2 <= r["peak_bytes"] / 1e9 <= table_gb


def test_gradient_checkpointing_and_quantization_lower_the_estimate():
    arch = KNOWN["qwen2.5-7b"]
    base = Setup(batch_size=4, seq_len=2048)
    no_gc = estimate(arch, Setup(**{**base.__dict__, "gradient_checkpointing": False}))["peak_bytes"]
    sixteen = estimate(arch, Setup(**{**base.__dict__, "quantization": "none"}))["peak_bytes"]
    assert estimate(arch, base)["peak_bytes"] < no_gc and estimate(arch, base)["peak_bytes"] < sixteen


def test_weight_terms_match_a_loaded_4bit_model(tiny_model_dir):
    from lightalign import loading
    from lightalign.training.sections import ModelSection

    arch = arch_from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir)), training=True)
    terms = estimate(arch, Setup(compute_bytes=4))["terms"]
    predicted = terms["base_4bit_linear"] + terms["base_unquantized"]
    measured = weight_bytes(model)
    assert abs(predicted - measured) / measured < 0.05, (predicted, measured)


MEASURE = r"""
import gc, json, sys, torch
from peft import get_peft_model
from lightalign import loading
from lightalign.training.policy import cast_trainable, lora_config
from lightalign.training.sections import LoraSection, ModelSection
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
path, gc_on, bs, seq = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
model = loading.load_base(ModelSection(name_or_path=path), training=True, gradient_checkpointing=gc_on)
model = get_peft_model(model, lora_config(LoraSection(r=8, dropout=0.0)))
cast_trainable(model, torch.float32)
model.train()
ids = torch.randint(5, model.config.vocab_size, (bs, seq))
model(input_ids=ids[:1], labels=ids[:1], use_cache=False).loss.backward()  # one-time allocations
model.zero_grad(set_to_none=True); gc.collect()
before = status("VmRSS"); open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
print(json.dumps({"growth": status("VmHWM") - before}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_estimate_matches_measured_cpu_peak(tmp_path, checkpointing):
    """Peak resident growth of one QLoRA step on CPU vs the estimate's non-weight terms. glibc keeps
    freed heap memory, so a fixed mmap threshold makes big tensors return to the OS when freed and
    the resident peak follow the live tensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    bs, seq = 8, 256
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), "1" if checkpointing else "0",
                          str(bs), str(seq)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["growth"]
    arch = arch_from_config(cfg.to_dict())
    r = estimate(arch, Setup(compute_bytes=4, adapter_bytes=4, lora_r=8, lora_dropout=0.0, batch_size=bs,
                             seq_len=seq, gradient_checkpointing=checkpointing, optim="sgd"))
    predicted = r["peak_bytes"] - r["static_bytes"] + r["terms"]["gradients"]
    assert abs(predicted - measured) / measured < 0.25, (predicted, measured)


def _estimate_cli(*args):
    from lightalign.cli import main

    return main(["estimate", *args])


@pytest.mark.parametrize("recipe", GPU_RECIPES, ids=lambda p: p.name)
def test_gpu_recipes_fit_the_card_they_are_written_for(recipe, capsys):
    card = next(part for part in recipe.stem.split("-") if part.endswith("gb"))[:-2]
    assert _estimate_cli(str(recipe), "--card", card) == 0
    assert "fits " in capsys.readouterr().out


def test_estimate_cli_says_when_it_does_not_fit(capsys):
    recipe = REPO / "recipes" / "gpu" / "llama3.1-8b-24gb-sft.yaml"
    assert _estimate_cli(str(recipe), "--card", "8") == 1
    assert "NO" in capsys.readouterr().out
    assert _estimate_cli(str(recipe), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peak_bytes"] < data["peak_bytes_other_checkpointing"]


def test_unknown_model_is_a_user_error():
    from lightalign.adapters.estimate import resolve_arch
    from lightalign.errors import UserError

    with pytest.raises(UserError, match="not a known model"):
        resolve_arch("someone/unknown-model-3b")
    assert resolve_arch("meta-llama/Llama-3.1-8B-Instruct") == KNOWN["llama-3.1-8b"]
    assert resolve_arch("Qwen/Qwen2.5-1.5B-Instruct") == KNOWN["qwen2.5-1.5b"]


@pytest.mark.parametrize("card", ["nan", "-5", "0", "inf"])
def test_a_card_size_that_is_not_positive_is_a_usage_error(card, capsys):
    recipe = REPO / "recipes" / "gpu" / "llama3.1-8b-24gb-sft.yaml"
    assert _estimate_cli(str(recipe), "--card", card) == 2
    assert "--card" in capsys.readouterr().err


@pytest.mark.parametrize("content,needle", [
    (b"\xff\xfe{", "not valid UTF-16 text"),
    (b"[1]", "expected a JSON object, got list"),
    (b'{"hidden_size": 64, "intermediate_size": 1, "num_hidden_layers": 1e30, "num_attention_heads": 4, '
     b'"vocab_size": 10}', "'num_hidden_layers' must be a positive integer"),
    (b'{"hidden_size": 64, "intermediate_size": 1, "num_hidden_layers": 2, "num_attention_heads": 0, '
     b'"vocab_size": 10}', "'num_attention_heads' must be a positive integer"),
])
def test_a_broken_config_json_is_named_not_a_traceback(tmp_path, content, needle):
    from lightalign.adapters.estimate import resolve_arch
    from lightalign.errors import UserError

    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(UserError, match=rf"config.json: .*{needle}|config.json: {needle}"):
        resolve_arch(str(tmp_path))


def test_answerai_70b_on_two_24gb_gpus():
    """Answer.AI (fsdp_qlora README): Llama-2-70B QLoRA on 2 x 24 GB with FSDP, batch 2 x 2048 tokens
    per GPU, bf16, gradient checkpointing and CPU offload (LoRA r 64 on every linear, dropout 0.1).
    Predicted per GPU: 12.2 GiB. The range asserted: it must fit a 24 GB card (the anchor ran), and hold
    at least this setup's activations (> 8 GiB); without the offload it must not fit (they needed it)."""
    arch = KNOWN["llama-2-70b"]
    anchor = Setup(lora_r=64, lora_dropout=0.1, upcast_non_quantized=False, batch_size=2, seq_len=2048,
                   gpus=2, fsdp=True, cpu_offload=True)
    per_gpu = estimate(arch, anchor)["peak_bytes"]
    assert 8 < per_gpu / GIB and fits(per_gpu, 24)[0], per_gpu / GIB
    no_offload = estimate(arch, Setup(**{**anchor.__dict__, "cpu_offload": False}))["peak_bytes"]
    assert not fits(no_offload, 24)[0] and fits(no_offload, 48)[0], no_offload / GIB
    one_gpu = estimate(arch, Setup(**{**anchor.__dict__, "gpus": 1, "fsdp": False, "cpu_offload": False}))
    assert not fits(one_gpu["peak_bytes"], 48)[0]


def test_per_gpu_memory_falls_with_the_number_of_gpus_under_fsdp_only():
    arch = KNOWN["llama-3.1-70b"]
    base = Setup(batch_size=2, seq_len=2048, upcast_non_quantized=False)
    single = estimate(arch, base)["peak_bytes"]
    fsdp = [estimate(arch, Setup(**{**base.__dict__, "gpus": n, "fsdp": True}))["peak_bytes"] for n in (2, 4, 8)]
    assert single > fsdp[0] > fsdp[1] > fsdp[2]
    # what never shards: activations, the gathered root unit and layers, NF4 constants
    assert fsdp[2] > estimate(arch, base)["terms"]["activations_saved"] + 4 * GIB
    ddp = estimate(arch, Setup(**{**base.__dict__, "gpus": 2}))
    assert ddp["peak_bytes"] > single and ddp["terms"]["ddp_gradient_buckets"] == ddp["terms"]["gradients"]


FSDP_RECIPES = sorted((REPO / "recipes" / "fsdp").glob("*.yaml"))


@pytest.mark.parametrize("recipe", FSDP_RECIPES, ids=lambda p: p.name)
def test_fsdp_recipes_fit_the_gpus_they_are_written_for(recipe, capsys):
    import re

    gpus, card = re.search(r"-(\d+)x(\d+)gb-", recipe.name).groups()
    accelerate_config = re.search(r"--accelerate-config (\S+)", recipe.read_text()).group(1)
    assert _estimate_cli(str(recipe), "--accelerate-config", str(REPO / accelerate_config), "--card", card) == 0
    out = capsys.readouterr().out
    assert f"each of {gpus} GPUs, FSDP" in out and f"fits {card} per GPU: yes" in out
    # on one card of that size, without FSDP, the same recipe does not fit: the recipe needs the sharding
    assert _estimate_cli(str(recipe), "--card", card) == 1


def test_cpu_offload_without_fsdp_is_a_usage_error(capsys):
    recipe = REPO / "recipes" / "gpu" / "llama3.1-8b-24gb-sft.yaml"
    assert _estimate_cli(str(recipe), "--gpus", "2", "--cpu-offload") == 2
    assert "--fsdp" in capsys.readouterr().err
