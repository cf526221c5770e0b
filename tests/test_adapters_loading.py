"""Loading the frozen base: NF4 + double quant, device compute dtype, safety refusals, pad != EOS, LoRA targets."""

from __future__ import annotations

import json
import shutil

import pytest

from lightalign import loading
from lightalign.training.policy import lora_config
from lightalign.training.sections import LoraSection, ModelSection
from lightalign.errors import UserError


def test_compute_dtype_is_fp32_on_cpu_and_never_fp16_by_default():
    import torch

    if not torch.cuda.is_available():
        assert loading.compute_dtype("auto") == torch.float32
    assert loading.compute_dtype("auto") != torch.float16
    assert loading.compute_dtype("bf16") == torch.bfloat16


def test_base_loads_nf4_double_quant_and_frozen(tiny_model_dir):
    import bitsandbytes as bnb
    import torch

    model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir)), training=True)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # every linear of both layers; lm_head stays full precision
    for m in quantized:
        state = m.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # nested = double quantization
        assert m.compute_dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config.quantization_config.bnb_4bit_use_double_quant


def test_sixteen_bit_option_loads_unquantized(tiny_model_dir):
    import bitsandbytes as bnb

    model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir), quantization="none"))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_lora_all_linear_targets_every_decoder_linear(tiny_model_dir):
    from peft import get_peft_model

    model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir)))
    peft = get_peft_model(model, lora_config(LoraSection(r=4, use_rslora=True)))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert peft.peft_config["default"].use_rslora
    assert not any("lm_head" in n and "lora" in n for n, _ in peft.named_parameters())


def test_pickle_only_weights_are_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserError, match="pickle"):
        loading.check_model_source(str(folder))
    loading.check_model_source(str(folder), allow_pickle=True)  # the user opted in


def test_remote_code_is_refused_unless_asked(tmp_path, tiny_model_dir):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="trust_remote_code"):
        loading.load_base(ModelSection(name_or_path=str(folder)))
    loading.check_model_source(str(folder), trust_remote_code=True)


def test_missing_local_folder_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative path that exists nowhere here, whatever the checkout holds
    with pytest.raises(UserError, match="path does not exist"):
        loading.check_model_source(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="runs/minilab/base: path does not exist"):
        loading.load_base(ModelSection(name_or_path="runs/minilab/base"))


def test_missing_relative_folder_that_looks_like_a_hub_id_names_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="nothere/base: no such local path, and not loadable as a hub id") as e:
        loading.load_base(ModelSection(name_or_path="nothere/base"))
    assert "Repo id must be" not in str(e.value)


def test_pickle_only_adapter_is_refused_unless_allowed(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="allow_pickle"):
        loading.check_adapter_dir(tmp_path)
    assert loading.check_adapter_dir(tmp_path, allow_pickle=True) == tmp_path


def test_one_quantization_builder():
    import subprocess

    found = subprocess.run(["grep", "-rln", "BitsAndBytesConfig(", "--include=*.py", "lightalign", "training",
                            "adapters", "aligner", "evaluation", "app", "serve", "lab"],
                           capture_output=True, text=True, cwd=loading.__file__.rsplit("/lightalign/", 1)[0]).stdout
    assert found.split() == ["lightalign/loading.py"]
    cfg = loading.quantization_config("nf4", double_quant=True)
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert loading.quantization_config("none") is None


def test_pad_token_made_distinct_from_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = tok.eos_token
    loading.ensure_pad_token(tok)
    assert tok.pad_token_id != tok.eos_token_id and tok.pad_token == "<pad>"
    assert loading.load_tokenizer(str(tiny_model_dir)).pad_token_id != tok.eos_token_id


def test_eval_mode_pass_does_not_break_training_gradients(tiny_model_dir):
    """bitsandbytes repacks CPU 4-bit weights for inference in eval mode and its repacked matmul has no
    autograd: an eval pass (e.g. DPO's reference precompute) must not change later training gradients."""
    import torch
    from peft import get_peft_model

    def grads(eval_first: bool):
        torch.manual_seed(0)
        model = loading.load_base(ModelSection(name_or_path=str(tiny_model_dir)), training=True)
        peft = get_peft_model(model, lora_config(LoraSection(r=4, dropout=0.0)))
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
        ids = torch.tensor([[1, 5, 9, 14, 33, 2, 7, 8]])
        if eval_first:
            peft.eval()
            with torch.no_grad():
                peft(input_ids=ids)
            peft.train()
        peft(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in peft.named_parameters() if p.requires_grad}

    clean, after_eval = grads(False), grads(True)
    first_layer = [n for n in clean if ".layers.0." in n and "lora_A" in n]
    assert first_layer and all(clean[n].abs().sum() > 0 for n in first_layer)
    for n in clean:
        torch.testing.assert_close(after_eval[n], clean[n], atol=1e-6, rtol=1e-5)


def test_a_4bit_load_prints_no_warning_a_user_cannot_act_on(tiny_model_dir):
    """bitsandbytes' notice about an optional hub-downloaded CPU kernel is filtered; other output is not."""
    import subprocess
    import sys

    code = ("from lightalign.loading import load_base, model_spec; import logging, sys; "
            f"load_base(model_spec({str(tiny_model_dir)!r}, 'nf4'), training=False); "
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('still shown'); "
            "print('loaded', file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "loaded" in p.stderr and "still shown" in p.stderr
    assert "gemm_4bit_forward" not in p.stderr
