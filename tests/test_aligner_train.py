"""Aligner training: masking, recipes, the two residual stages, full FT / LoRA / QLoRA / seq2seq."""

import json
from pathlib import Path

import pytest

from lightalign.aligner.train import Config, encode_rows, load_recipe, train
from lightalign.config import from_dict
from lightalign.errors import UserError

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*/aligner*.yaml"))


def _triples(tmp_path, small_splits, n=24):
    rows = small_splits["aligner"][:n]
    path = tmp_path / "triples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model_dir, data, out, **extra):
    data_cfg = {"model": {"name_or_path": str(model_dir)}, "data": {"path": str(data), "max_length": 256},
                "output_dir": str(out), "template": "chat-v2", "max_new_tokens": 32,
                "identity": {"share": 0.25, "epochs": 1},
                "training": {"epochs": 1, "lr": 1e-3, "batch_size": 8, "logging_steps": 1}}
    for key, value in extra.items():
        section, _, name = key.partition("__")
        if name:
            data_cfg.setdefault(section, {})[name] = value
        else:
            data_cfg[section] = value
    return from_dict(Config, data_cfg, "test")


def test_prompt_is_masked_and_correction_ends_with_eos(lab_tokenizer):
    from lightalign.aligner.templates import get_template

    t = get_template("chat-v2")
    triple = {"question": "What is 2 plus 2?", "answer": "5", "correction": "2 plus 2 is 4."}
    (row,), skipped = encode_rows([triple], lab_tokenizer, t, "causal", 256)
    prompt = t.encode(lab_tokenizer, triple["question"], triple["answer"])
    target = lab_tokenizer("2 plus 2 is 4.", add_special_tokens=False)["input_ids"] + [lab_tokenizer.eos_token_id]
    assert row["input_ids"] == prompt + target
    assert row["labels"] == [-100] * len(prompt) + target
    assert 0 < sum(x != -100 for x in row["labels"]) < len(row["labels"])  # neither all masked nor none
    assert row["input_ids"].count(lab_tokenizer.bos_token_id) == 1
    assert encode_rows([triple], lab_tokenizer, t, "causal", 5) == ([], 1)  # too long: skipped, never cut


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipes_load(recipe):
    cfg = load_recipe(recipe)
    assert cfg.template and cfg.output_dir


def test_recipes_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert "minilab/aligner.yaml" in names and any(n.startswith("gpu/") and "qlora" in n for n in names)


def test_config_validation(tmp_path):
    with pytest.raises(UserError, match="identity.share"):
        _cfg("m", "d", tmp_path, identity={"share": 1.5})
    with pytest.raises(UserError, match="load_in_4bit"):
        _cfg("m", "d", tmp_path, lora={"load_in_4bit": True})
    with pytest.raises(UserError, match="unknown template"):
        _cfg("m", "d", tmp_path, template="nope")


def test_full_finetune_two_stages_then_skip(tmp_path, tiny_model_dir, small_splits):
    from lightalign.aligner.model import Aligner

    out = tmp_path / "al"
    cfg = _cfg(tiny_model_dir, _triples(tmp_path, small_splits), out)
    assert train(cfg) == out
    log = json.loads((out / "train_log.json").read_text())
    assert log["identity"]["rows"] == 6 and log["correction"]["rows"] == 24
    assert (out / "identity" / "stage_done.json").exists() and (out / "model.safetensors").exists()
    assert not (out / "correction" / "checkpoints").exists()
    saved = json.loads((out / "aligner_config.json").read_text())
    assert saved["template"]["name"] == "chat-v2" and saved["architecture"] == "causal" and not saved["adapter"]
    a = Aligner.from_pretrained(out)
    assert a.template.name == "chat-v2" and a.max_new_tokens == 32
    assert a.correct("What is 2 plus 2?", "5").original == "5"
    mtime = (out / "model.safetensors").stat().st_mtime
    train(cfg)  # complete: nothing retrained
    assert (out / "model.safetensors").stat().st_mtime == mtime


def test_resume_skips_a_finished_identity_stage(tmp_path, tiny_model_dir, small_splits):
    out = tmp_path / "al"
    cfg = _cfg(tiny_model_dir, _triples(tmp_path, small_splits), out)
    train(cfg)
    first = json.loads((out / "identity" / "stage_done.json").read_text())
    (out / "train_log.json").unlink()  # as if the run died during the correction stage
    (out / "model.safetensors").unlink()
    train(cfg)
    log = json.loads((out / "train_log.json").read_text())
    assert log["identity"] == first and (out / "model.safetensors").exists()


def test_learning_reduces_loss(tmp_path, tiny_model_dir, small_splits):
    out = tmp_path / "al"
    cfg = _cfg(tiny_model_dir, _triples(tmp_path, small_splits, 32), out, identity={"share": 0.0},
               training={"epochs": 8, "lr": 3e-3, "batch_size": 8, "logging_steps": 1})
    train(cfg)
    log = json.loads((out / "train_log.json").read_text())
    assert "identity" not in log
    history = json.loads((out / "train_log.json").read_text())["correction"]
    assert history["final_loss"] < 0.75 * history["first_loss"], history


def test_lora_and_qlora(tmp_path, tiny_model_dir, small_splits):
    from lightalign.aligner.model import Aligner

    data = _triples(tmp_path, small_splits, 16)
    for name, lora in (("lora", {"enabled": True, "r": 4, "alpha": 8}),
                       ("qlora", {"enabled": True, "r": 4, "alpha": 8, "load_in_4bit": True})):
        out = tmp_path / name
        train(_cfg(tiny_model_dir, data, out, lora=lora))
        assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
        saved = json.loads((out / "aligner_config.json").read_text())
        assert saved["adapter"] and saved["base_model"] == str(tiny_model_dir.resolve())
        a = Aligner.from_pretrained(out, max_new_tokens=6)
        assert a.correct("What is 2 plus 2?", "5").original == "5"


def test_lora_merged_into_a_plain_model(tmp_path, tiny_model_dir, small_splits):
    from lightalign.aligner.model import Aligner
    from lightalign.generation import generate_texts

    out = tmp_path / "merged"
    train(_cfg(tiny_model_dir, _triples(tmp_path, small_splits, 16), out,
               lora={"enabled": True, "r": 4, "alpha": 8, "merge": True}, training={"epochs": 1, "lr": 1e-2}))
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert not json.loads((out / "aligner_config.json").read_text())["adapter"]
    merged = Aligner.from_pretrained(out, max_new_tokens=8)
    adapter = Aligner.from_pretrained(out / "adapter", template="chat-v2", max_new_tokens=8)  # via peft
    prompt = merged.template.render("What is 2 plus 2?", "5", merged.tokenizer)
    assert generate_texts(merged.model, merged.tokenizer, [prompt], max_new_tokens=8) == \
        generate_texts(adapter.model, adapter.tokenizer, [prompt], max_new_tokens=8)


def test_seq2seq_aligner(tmp_path, lab_tokenizer, small_splits):
    from transformers import T5Config, T5ForConditionalGeneration

    from lightalign.aligner.model import Aligner

    model_dir = tmp_path / "t5"
    config = T5Config(vocab_size=len(lab_tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      pad_token_id=lab_tokenizer.pad_token_id, eos_token_id=lab_tokenizer.eos_token_id,
                      decoder_start_token_id=lab_tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(model_dir)
    lab_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "al"
    with pytest.raises(UserError, match="chat template"):
        train(_cfg(model_dir, _triples(tmp_path, small_splits, 16), out))
    train(_cfg(model_dir, _triples(tmp_path, small_splits, 16), out, template="aligner-v2"))
    a = Aligner.from_pretrained(out, max_new_tokens=6)
    assert a.architecture == "seq2seq" and a.template.name == "aligner-v2"
    fast = a.correct_batch([("What is 2 plus 2?", "5"), ("Hi", "Hello there")])
    a.decoding = "generate"
    assert [c.text for c in a.correct_batch([("What is 2 plus 2?", "5"), ("Hi", "Hello there")])] == [c.text for c in fast]
