"""The app's model layer on real tiny models: one base with its adapter switched on and off,
a lazily loaded Aligner, missing or broken parts reported instead of raised, and one comparison."""

import pytest

from lightalign.app.compare import PromptError, compare
from lightalign.app.config import AppConfig
from lightalign.app.examples import Examples
from lightalign.app.models import GenSettings, Models, PartMissing
from helpers.app_lab import app_config, expected_answers

MAX_NEW = 24


@pytest.fixture(scope="module")
def case(app_lab, small_splits):
    records = [r for r in small_splits["eval_prompts"] if r["kind"] == "unanswerable"]
    return expected_answers(app_lab, records, MAX_NEW)


@pytest.fixture(scope="module")
def models(app_lab):
    return Models(app_config(app_lab))


def test_one_base_copy_with_the_adapter_switched(models, case):
    rec, expected = case
    assert all(s.ok for s in models.status.values()), models.status
    settings = GenSettings(max_new_tokens=MAX_NEW)
    base = models.answer(rec["prompt"], adapter=False, settings=settings)
    adapted = models.answer(rec["prompt"], adapter=True, settings=settings)
    assert base == expected["base"]
    assert adapted == expected["adapter"]
    assert base != adapted
    # one copy: every base weight exists once; the adapter adds only its LoRA matrices
    names = [n for n, _ in models.model.named_parameters()]
    lora = [n for n in names if "lora_" in n]
    assert lora and len(names) - len(lora) == len(list(models.model.get_base_model().parameters())) - len(lora)
    ptrs = [p.data_ptr() for n, p in models.model.named_parameters() if "lora_" not in n]
    assert len(ptrs) == len(set(ptrs))
    # switching back and forth leaves no trace
    assert models.answer(rec["prompt"], adapter=False, settings=settings) == expected["base"]


def test_stream_grows_and_an_early_stop_frees_the_model(models, case):
    rec, expected = case
    settings = GenSettings(max_new_tokens=MAX_NEW)
    seen = list(models.stream(rec["prompt"], adapter=True, settings=settings))
    assert len(seen) > 1 and seen[-1] == expected["adapter"]
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))
    gen = models.stream(rec["prompt"], adapter=True, settings=settings)
    next(gen)
    assert models.lock.locked()
    gen.close()  # what gradio does when the user presses Stop or leaves
    assert not models.lock.locked()
    assert models.answer(rec["prompt"], adapter=False, settings=settings) == expected["base"]


def test_sampling_follows_the_seed(models, case):
    rec, _ = case
    hot = [GenSettings(max_new_tokens=MAX_NEW, temperature=1.5, top_p=1.0, seed=s) for s in (1, 1, 2)]
    a, b, c = (models.answer(rec["prompt"], adapter=True, settings=h) for h in hot)
    assert a == b and a != c


def test_prompt_longer_than_the_model_reads_is_refused(models, monkeypatch):
    tok = models.tokenizer
    limit = models.model.config.max_position_embeddings
    words = "capital of land " * 400
    ids = tok(words, add_special_tokens=False)["input_ids"]
    too_long = tok.decode(ids[:limit + 10])
    with pytest.raises(PromptError, match=f"reads at most {limit}"):
        models.answer(too_long, adapter=False, settings=GenSettings(max_new_tokens=8))
    assert not models.lock.locked()

    near = tok.decode(ids[:limit - 40])  # fits, but not with 64 new tokens: the answer is cut to fit
    room = limit - len(tok(models.prompt_text(near), add_special_tokens=False)["input_ids"])
    assert 0 < room < 64
    asked, lengths, generate = [], [], models.model.generate

    def spy(**kw):
        asked.append(kw["max_new_tokens"])
        out = generate(**kw)
        lengths.append(out.shape[1])
        return out

    monkeypatch.setattr(models.model, "generate", spy)
    models.answer(near, adapter=True, settings=GenSettings(max_new_tokens=64))
    assert asked == [room] and lengths[0] <= limit
    assert not models.lock.locked()


def test_aligner_loads_lazily_and_corrects(models, case):
    rec, expected = case
    fresh = Models(models.cfg)
    assert fresh._aligner is None and "loads on first use" in fresh.status["aligner"].message
    result = fresh.correct(rec["prompt"], expected["base"])
    assert result.text == expected["aligner"] and result.changed
    assert fresh.status["aligner"].ok and "first use" not in fresh.status["aligner"].message


def test_comparison_stream_fills_every_column_with_judges(models, case, app_lab):
    rec, expected = case
    examples = Examples.from_config(models.cfg)
    snaps = list(compare(models, examples, rec["prompt"], GenSettings(max_new_tokens=MAX_NEW),
                         correct_adapter=True))
    last = snaps[-1]
    for col in ("base", "adapter", "aligner", "adapter_aligner"):
        assert last.columns[col].text == expected[col], col
    assert len(snaps) > 5  # streamed, not one final answer
    assert "**honest** ✓" in last.columns["aligner"].verdict  # "I do not know." on an unanswerable prompt
    assert "**honest** ✗" in last.columns["base"].verdict
    # the diff spells the Aligner's text with its unmarked and "+" spans, and marks what it removed
    assert "".join(t for t, lab in last.diff if lab != "-") == expected["aligner"]
    assert any(lab == "+" for _, lab in last.diff) and any(lab == "-" for _, lab in last.diff)
    assert "removed" in last.diff_summary
    free = list(compare(models, examples, "Hello there", GenSettings(max_new_tokens=4)))[-1]
    assert "No judge for this prompt" in free.columns["base"].verdict
    with pytest.raises(PromptError, match="at most 2,000"):
        next(compare(models, examples, "x" * 2001, GenSettings()))


def test_missing_or_broken_parts_are_reported_and_the_base_still_answers(app_lab, case, tmp_path):
    from safetensors.torch import load_file, save_file

    rec, expected = case
    settings = GenSettings(max_new_tokens=MAX_NEW)
    missing = Models(app_config(app_lab, adapter=str(tmp_path / "nope"), aligner=str(tmp_path / "noaligner")))
    assert not missing.has_adapter and str(tmp_path / "nope") in missing.status["adapter"].message
    assert not missing.status["aligner"].ok
    with pytest.raises(PartMissing, match="no such folder"):
        missing.correct("q", "a")
    with pytest.raises(PartMissing, match="adapter"):
        missing.answer(rec["prompt"], adapter=True, settings=settings)
    assert missing.answer(rec["prompt"], adapter=False, settings=settings) == expected["base"]

    # an adapter whose shapes do not fit this base: peft injects its layers, then fails to load
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((app_lab / "adapters/dpo/adapter_config.json").read_text())
    weights = load_file(app_lab / "adapters/dpo/adapter_model.safetensors")
    save_file({k: v[:, :3].contiguous() for k, v in weights.items()}, broken / "adapter_model.safetensors")
    bad_aligner = tmp_path / "bad_aligner"
    bad_aligner.mkdir()
    (bad_aligner / "config.json").write_text("{not json")
    models = Models(app_config(app_lab, adapter=str(broken), aligner=str(bad_aligner)))
    assert not models.has_adapter and "size mismatch" in models.status["adapter"].message
    assert not any("lora_" in n for n, _ in models.model.named_modules())
    assert models.answer(rec["prompt"], adapter=False, settings=settings) == expected["base"]
    with pytest.raises(PartMissing):
        models.correct(rec["prompt"], expected["base"])
    assert "not loaded" in models.status["aligner"].message


def test_wrong_base_path_is_reported_not_raised(tmp_path):
    models = Models(AppConfig(base=str(tmp_path / "nobase")))
    assert models.model is None and "no such folder" in models.status["base"].message
    with pytest.raises(PartMissing, match="base model"):
        models.answer("hi", adapter=False, settings=GenSettings(max_new_tokens=2))


def test_nf4_base_with_adapter_switch(app_lab, case):
    rec, _ = case
    models = Models(app_config(app_lab, quantization="nf4"))
    assert models.has_adapter and "4-bit NF4" in models.status["base"].message
    assert any(type(m).__name__ == "Linear4bit" for m in models.model.modules())
    settings = GenSettings(max_new_tokens=MAX_NEW)
    assert models.answer(rec["prompt"], True, settings) != models.answer(rec["prompt"], False, settings)
