"""Aligner training: masking, recipes, the two residual stages, full FT / LoRA / QLoRA / seq2seq."""

import json
from pathlib import Path

import pytest

from lightalign.aligner.train import Config, encode_rows, train
from lightalign.config import from_dict
from lightalign.errors import UserError
from lightalign.training import load_recipe, runs

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
    loaded = load_recipe(recipe)
    assert loaded.method == "aligner" and isinstance(loaded.config, Config)
    assert loaded.config.template and loaded.config.output_dir


def test_recipes_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert "minilab/aligner.yaml" in names and any(n.startswith("gpu/") and "qlora" in n for n in names)


def test_config_validation(tmp_path):
    with pytest.raises(UserError, match="identity.share"):
        _cfg("m", "d", tmp_path, identity={"share": 1.5})
    with pytest.raises(UserError, match="quantization=nf4"):
        _cfg("m", "d", tmp_path, model__quantization="nf4")
    with pytest.raises(UserError, match="unknown template"):
        _cfg("m", "d", tmp_path, template="nope")


def test_full_finetune_two_stages_then_skip(tmp_path, tiny_model_dir, small_splits):
    from lightalign.aligner.model import Aligner

    out = tmp_path / "al"
    cfg = _cfg(tiny_model_dir, _triples(tmp_path, small_splits), out)
    assert train(cfg) == out
    assert runs.is_complete(out)
    log = json.loads((out / "metrics.json").read_text())
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
    (out / "metrics.json").unlink()  # as if the run died during the correction stage
    (out / "model.safetensors").unlink()
    changed = _cfg(tiny_model_dir, _triples(tmp_path, small_splits), out, training={"epochs": 1, "lr": 5e-4})
    with pytest.raises(UserError, match="training.lr"):  # its finished identity stage came from another recipe
        train(changed)
    train(cfg)
    log = json.loads((out / "metrics.json").read_text())
    assert log["identity"] == first and (out / "model.safetensors").exists()


def test_resume_never_starts_over_but_a_refused_size_deletes_nothing(tmp_path, tiny_model_dir, small_splits):
    out = tmp_path / "al"
    train(_cfg(tiny_model_dir, _triples(tmp_path, small_splits), out))
    done = out / "identity" / "stage_done.json"
    huge = _cfg(tiny_model_dir, _triples(tmp_path, small_splits), out, resume="never", data__max_length=10**6)
    with pytest.raises(UserError, match="data.max_length"):
        train(huge)
    assert done.exists()  # refused before the finished stages were deleted
    first = done.stat().st_mtime_ns
    train(_cfg(tiny_model_dir, _triples(tmp_path, small_splits), out, resume="never"))
    assert done.stat().st_mtime_ns != first and runs.is_complete(out)  # started over: the stage ran again


def test_learning_reduces_loss(tmp_path, tiny_model_dir, small_splits):
    out = tmp_path / "al"
    cfg = _cfg(tiny_model_dir, _triples(tmp_path, small_splits, 32), out, identity={"share": 0.0},
               training={"epochs": 8, "lr": 3e-3, "batch_size": 8, "logging_steps": 1})
    train(cfg)
    log = json.loads((out / "metrics.json").read_text())
    assert "identity" not in log
    history = log["correction"]
    assert history["final_loss"] < 0.75 * history["first_loss"], history


def test_lora_and_qlora(tmp_path, tiny_model_dir, small_splits):
    from lightalign.aligner.model import Aligner

    data = _triples(tmp_path, small_splits, 16)
    for name, quantization in (("lora", "none"), ("qlora", "nf4")):
        out = tmp_path / name
        train(_cfg(tiny_model_dir, data, out, lora={"enabled": True, "r": 4, "alpha": 8},
                   model__quantization=quantization))
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
    a.engine.decoding = "generate"
    assert [c.text for c in a.correct_batch([("What is 2 plus 2?", "5"), ("Hi", "Hello there")])] == [c.text for c in fast]


def test_deprecated_keys_still_load_with_one_line_each(tmp_path, capsys):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("method: aligner\nmodel: {name_or_path: m, dtype: bfloat16}\n"
                      "data: {path: d.jsonl, format: pku_saferlhf, prefer: better}\n"
                      "output_dir: o\nlora: {enabled: true, load_in_4bit: true}\n")
    cfg = load_recipe(recipe).config
    assert cfg.model.compute_dtype == "bf16" and cfg.model.quantization == "nf4"
    assert cfg.data.schema == "pku_saferlhf" and cfg.data.preference == "better"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("deprecated key" in line and str(recipe) in line for line in err)
    assert any("lora.load_in_4bit" in line and "model.quantization" in line for line in err)
    with pytest.raises(UserError, match="both 'data.format'"):
        load_recipe(recipe, ["data.schema=triples"])


def test_adapter_aligner_loads_from_another_working_directory(tmp_path, tiny_model_dir, small_splits, monkeypatch):
    from lightalign.aligner.model import Aligner

    data = _triples(tmp_path, small_splits, 8)
    monkeypatch.chdir(tiny_model_dir.parent)  # the recipe names its base relative to here
    out = tmp_path / "rel"
    train(_cfg(tiny_model_dir.name, data, out, lora={"enabled": True, "r": 4, "alpha": 8},
               identity={"share": 0.0}))
    saved = json.loads((out / "aligner_config.json").read_text())
    assert saved["base_model"] == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tmp_path)
    assert Aligner.from_pretrained(out, max_new_tokens=4).architecture == "causal"


def test_killed_stage_resumes_from_its_committed_checkpoint(tmp_path, tiny_model_dir, small_splits, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Killed(Exception):
        pass

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if "correction" in args.output_dir and state.global_step == 3:
                raise Killed()

    data = _triples(tmp_path, small_splits, 32)
    settings = dict(identity={"share": 0.0}, training={"epochs": 1, "lr": 1e-3, "batch_size": 4,
                                                       "logging_steps": 1, "save_steps": 2})
    full = train(_cfg(tiny_model_dir, data, tmp_path / "full", **settings))
    out = tmp_path / "killed"
    cfg = _cfg(tiny_model_dir, data, out, **settings)
    with pytest.raises(Killed):
        train(cfg, callbacks=[KillAt()])
    assert not runs.is_complete(out)
    train(cfg)
    assert "resuming from" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["correction"]["resumed_from"].endswith("checkpoint-2")
    assert [p["step"] for p in metrics["loss_curve"]] == list(range(1, 9))  # the whole run, not the last segment
    assert metrics["tokens"] == json.loads((full / "metrics.json").read_text())["tokens"]
    want, got = load_file(str(full / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-5)


def test_report_to_reaches_the_aligner_trainer(tmp_path, tiny_model_dir, small_splits):
    out = tmp_path / "tb"
    train(_cfg(tiny_model_dir, _triples(tmp_path, small_splits, 8), out, identity={"share": 0.0},
               training={"epochs": 1, "batch_size": 8, "logging_steps": 1, "report_to": "tensorboard"}))
    events = list((out / "correction" / "checkpoints").glob("runs/*/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_group_by_length_sampling_pads_less_than_random_batches(tmp_path, tiny_model_dir, small_splits):
    """training.sampling=group_by_length reaches the Trainer: the same rows and steps, less padding."""
    data = _triples(tmp_path, small_splits, 48)
    counts = {}
    for sampling in ("random", "group_by_length"):
        out = tmp_path / sampling
        train(_cfg(tiny_model_dir, data, out, identity={"share": 0.0},
                   training={"epochs": 1, "batch_size": 8, "logging_steps": 4, "sampling": sampling}))
        stage = json.loads((out / "metrics.json").read_text())["correction"]
        counts[sampling] = (stage["tokens"], stage["processed_tokens"], stage["steps"])
    (real, random_processed, steps), (real_g, grouped_processed, steps_g) = counts["random"], counts["group_by_length"]
    assert real == real_g and steps == steps_g
    assert grouped_processed < random_processed, counts


def test_sentence_rows_train_beside_the_triples_and_record_the_sentence_template(tmp_path, tiny_model_dir,
                                                                                 small_splits):
    from lightalign.aligner.data import sentence_rows
    from lightalign.aligner.model import Aligner

    out = tmp_path / "al"
    data = _triples(tmp_path, small_splits)
    train(_cfg(tiny_model_dir, data, out, identity={"share": 0.0}, sentence_rows={"share": 1.0}))
    log = json.loads((out / "metrics.json").read_text())
    expected = len(sentence_rows(small_splits["aligner"][:24], 1.0))
    assert log["sentence_rows"] == expected > 0
    assert log["correction"]["rows"] == 24 + expected
    saved = json.loads((out / "aligner_config.json").read_text())
    assert saved["sentence_template"]["name"] == "chat-sentence-v1"
    assert Aligner.from_pretrained(out).sentence_template.name == "chat-sentence-v1"
