"""The Aligner class: loading (safetensors only, adapters, templates), batching, guards, flags."""

import json
import subprocess
import sys

import pytest
import torch

from helpers.aligners import PAIRS

from lightalign.aligner.model import Aligner
from lightalign.errors import UserError


def test_save_records_template_and_architecture(aligner_dir):
    cfg = json.loads((aligner_dir / "aligner_config.json").read_text())
    assert cfg["template"]["name"] == "chat-v2" and cfg["architecture"] == "causal"
    assert (aligner_dir / "model.safetensors").exists()
    a = Aligner.from_pretrained(aligner_dir)
    assert a.template.name == "chat-v2" and a.architecture == "causal" and a.max_new_tokens == 12
    assert Aligner.from_pretrained(aligner_dir, template="aligner-v1").template.name == "aligner-v1"


def test_checkpoint_without_config_gets_released_template(tiny_model_dir):
    a = Aligner.from_pretrained(tiny_model_dir)  # like the released aligner-7b-v1.0: no aligner_config.json
    assert a.template.name == "aligner-v1"


def test_copy_decoding_equals_plain_generate(aligner_dir):
    a = Aligner.from_pretrained(aligner_dir)
    fast = a.correct_batch(PAIRS, batch_size=3)
    a.engine.decoding = "generate"
    plain = a.correct_batch(PAIRS, batch_size=1)
    assert [(c.text, c.fallback) for c in fast] == [(c.text, c.fallback) for c in plain]
    assert [c.original for c in fast] == [p[1] for p in PAIRS]  # order kept despite length sorting


def test_guards_fall_back_to_the_answer(aligner_dir):
    a = Aligner.from_pretrained(aligner_dir, max_new_tokens=2)  # a random model never stops within 2 tokens
    c = a.correct(*PAIRS[0])
    assert c.fallback in ("truncated", "empty") and c.text == PAIRS[0][1] and not c.changed and c.original == PAIRS[0][1]
    long_q = "capital " * 600
    assert a.correct(long_q, "x").fallback == "too_long"


def test_one_bad_record_does_not_kill_the_batch(aligner_dir):
    a = Aligner.from_pretrained(aligner_dir)
    out = a.correct_batch([PAIRS[0], ("q", None), "not a pair", {"question": "q2", "answer": "a2"}, PAIRS[1]])
    assert out[1].fallback.startswith("error") and out[2].fallback.startswith("error")
    assert out[0].fallback != "error" and out[3].original == "a2" and out[4].original == "11"
    assert all(not (c.fallback or "").startswith("error") for c in (out[0], out[3], out[4]))


def test_refuses_pickle_weights_unless_allowed(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.save_pretrained(tmp_path)  # a legacy checkpoint: pickled weights only
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="allow_pickle"):
        Aligner.from_pretrained(tmp_path)
    assert Aligner.from_pretrained(tmp_path, allow_pickle=True).architecture == "causal"


class _RunsCode:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_pickle_that_torch_refuses_is_one_line_even_with_allow_pickle(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    torch.save({"model.embed_tokens.weight": _RunsCode()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only") as e:
        Aligner.from_pretrained(tmp_path, allow_pickle=True)
    assert len(str(e.value).splitlines()) == 1
    assert "a pickle ran code" not in capsys.readouterr().out


def test_pickle_only_lora_adapter_is_refused_unless_allowed(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    peft_model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").exists() and not (tmp_path / "adapter_model.safetensors").exists()
    with pytest.raises(UserError, match="allow_pickle"):
        Aligner.from_pretrained(tmp_path)
    assert Aligner.from_pretrained(tmp_path, template="chat-v2", allow_pickle=True).architecture == "causal"


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such Aligner folder"):
        Aligner.from_pretrained(tmp_path / "nope")


def test_lora_adapter_folder_loads_through_peft(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.generation import generate_texts

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.save_pretrained(tmp_path)
    (tmp_path / "aligner_config.json").write_text(json.dumps({"template": "chat-v2", "architecture": "causal"}))
    a = Aligner.from_pretrained(tmp_path, max_new_tokens=8)
    prompt = a.template.render(*PAIRS[0], tok)
    expected = generate_texts(peft_model.eval(), tok, [prompt], max_new_tokens=8)[0]
    got = generate_texts(a.model, tok, [prompt], max_new_tokens=8)[0]
    assert got == expected


def test_package_import_is_lazy():
    code = ("import sys, lightalign.aligner, lightalign.aligner.cli; "
            "assert 'torch' not in sys.modules, 'torch imported eagerly'; "
            "from lightalign.aligner import Aligner; print(Aligner.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Aligner"


def test_editing_rule_is_saved_and_restored(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    Aligner(model, AutoTokenizer.from_pretrained(tiny_model_dir), template="chat-v2", copy_bias=2.0,
            copy_min_prob=0.2).save_pretrained(tmp_path)
    a = Aligner.from_pretrained(tmp_path)
    assert (a.copy_bias, a.copy_min_prob) == (2.0, 0.2)
    assert Aligner.from_pretrained(tmp_path, copy_min_prob=0.0).copy_min_prob == 0.0  # the caller overrides
