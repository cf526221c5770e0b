"""Systems answer exactly as the models do when called directly, from one copy of the base weights,
and the generation cache makes a re-run (or a resumed run) generate nothing twice."""

from __future__ import annotations

import pytest

from lightalign.config import from_dict
from lightalign.evaluation import systems as systems_mod
from lightalign.evaluation.cache import GenerationCache
from lightalign.evaluation.config import EvalConfig
from lightalign.evaluation.systems import Systems, urial_system_prompt

MAX_NEW = 12


@pytest.fixture(scope="module")
def lab(app_lab):
    """base/ (tiny Llama that talks), adapters/dpo/ (random non-zero LoRA), aligner/ (trained to abstain)."""
    return app_lab


@pytest.fixture(scope="module")
def records(small_splits):
    recs = small_splits["eval_prompts"]
    return [next(r for r in recs if r["kind"] == k) for k in ("answerable", "format", "harmful", "unanswerable")] + \
        recs[:4]


def make_cfg(lab, tmp_path, **gen):
    return from_dict(EvalConfig, {
        "base": {"path": str(lab / "base")},
        "systems": [{"name": "base", "kind": "base"},
                    {"name": "dpo", "kind": "adapter", "adapter": str(lab / "adapters" / "dpo")},
                    {"name": "aligner", "kind": "aligner", "aligner": str(lab / "aligner")},
                    {"name": "dpo+aligner", "kind": "adapter+aligner", "adapter": str(lab / "adapters" / "dpo"),
                     "aligner": str(lab / "aligner")},
                    {"name": "urial", "kind": "urial"}],
        "dataset": {"path": "unused.jsonl"},
        "judges": [{"kind": "refusal"}],
        "generation": {"max_new_tokens": MAX_NEW, "batch_size": 3, **gen},
        "output": str(tmp_path), "progress": False})


def answer_all(cfg, records, cache_path):
    with GenerationCache(cache_path) as cache:
        s = Systems(cfg, cache)
        try:
            return {sys.name: s.answer(sys, records) for sys in cfg.systems}
        finally:
            s.close()


def test_systems_match_direct_calls_and_share_one_base(lab, records, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner import Aligner
    from lightalign.generation import generate_chat

    loads = []
    real_load = systems_mod.load_base_model
    monkeypatch.setattr(systems_mod, "load_base_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    cfg = make_cfg(lab, tmp_path)
    got = answer_all(cfg, records, tmp_path / "cache.jsonl")
    assert len(loads) == 1  # one copy of the base weights serves every local system

    prompts = [r["prompt"] for r in records]
    tok = AutoTokenizer.from_pretrained(lab / "base")
    base = AutoModelForCausalLM.from_pretrained(lab / "base").eval()
    want_base = generate_chat(base, tok, prompts, max_new_tokens=MAX_NEW, batch_size=3)
    want_urial = generate_chat(base, tok, prompts, system=urial_system_prompt(), max_new_tokens=MAX_NEW, batch_size=3)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab / "base"),
                                     str(lab / "adapters" / "dpo")).eval()
    want_dpo = generate_chat(peft, tok, prompts, max_new_tokens=MAX_NEW, batch_size=3)
    text = lambda name: [r["text"] for r in got[name]]  # noqa: E731
    assert text("base") == want_base
    assert text("urial") == want_urial
    assert text("dpo") == want_dpo and want_dpo != want_base  # the adapter really is switched on and off
    assert [r["upstream"] for r in got["dpo+aligner"]] == want_dpo

    aligner = Aligner.from_pretrained(lab / "aligner")
    fixed = aligner.correct_batch(list(zip(prompts, want_base)))
    assert text("aligner") == [c.text for c in fixed]
    assert [r["changed"] for r in got["aligner"]] == [c.changed for c in fixed]
    assert any(r["changed"] for r in got["aligner"])
    assert text("dpo+aligner") == [c.text for c in aligner.correct_batch(list(zip(prompts, want_dpo)))]
    torch.testing.assert_close(base.model.embed_tokens.weight, peft.base_model.model.model.embed_tokens.weight)


def test_rerun_comes_from_the_cache_without_loading_any_model(lab, records, tmp_path, monkeypatch):
    cfg = make_cfg(lab, tmp_path)
    first = answer_all(cfg, records, tmp_path / "cache.jsonl")

    def boom(*a, **k):
        raise AssertionError("a model was loaded although every answer is cached")

    monkeypatch.setattr(systems_mod, "load_base_model", boom)
    monkeypatch.setattr(systems_mod, "load_aligner", boom)
    assert answer_all(cfg, records, tmp_path / "cache.jsonl") == first
    # different settings are a different key: this run must generate (and so hits the patched loader)
    with pytest.raises(AssertionError, match="a model was loaded"):
        answer_all(make_cfg(lab, tmp_path, max_new_tokens=MAX_NEW + 1), records, tmp_path / "cache.jsonl")


def test_interrupted_run_resumes_from_the_finished_batches(lab, records, tmp_path, monkeypatch):
    import lightalign.generation as generation

    cfg = make_cfg(lab, tmp_path)
    cfg.systems = cfg.systems[:1]
    real = generation.generate_texts
    calls = []

    def crash_on_second_batch(model, tok, texts, **kw):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, tok, texts, **kw)

    monkeypatch.setattr(generation, "generate_texts", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        answer_all(cfg, records, tmp_path / "cache.jsonl")
    def counting(model, tok, texts, **kw):
        calls.append(len(texts))
        return real(model, tok, texts, **kw)

    monkeypatch.setattr(generation, "generate_texts", counting)
    calls.clear()
    replies = answer_all(cfg, records, tmp_path / "cache.jsonl")
    assert sum(calls) == len({r["prompt"] for r in records}) - 3  # the first batch of 3 was kept
    assert all(r["text"] is not None for r in replies["base"])


def test_a_prompt_that_fails_costs_only_its_own_reply(lab, records, tmp_path, monkeypatch):
    import lightalign.generation as generation

    cfg = make_cfg(lab, tmp_path)
    cfg.systems = cfg.systems[:1]
    real = generation.generate_texts
    # a prompt that is no part of another (a question and its "Answer in one word." variant share text)
    bad = next(r["prompt"] for r in records[4:] if not any(r["prompt"] in o["prompt"] for o in records if o is not r))

    def fails_on_one_prompt(model, tok, texts, **kw):
        if any(bad in t for t in texts):
            raise ValueError("input longer than the model's context")
        return real(model, tok, texts, **kw)

    monkeypatch.setattr(generation, "generate_texts", fails_on_one_prompt)
    replies = answer_all(cfg, records, tmp_path / "cache.jsonl")["base"]
    for rec, r in zip(records, replies):
        if rec["prompt"] == bad:
            assert r["text"] is None and "longer than the model's context" in r["error"]
        else:
            assert r["text"] is not None and r["error"] is None, (rec["prompt"], r)
    monkeypatch.setattr(generation, "generate_texts", real)  # fixed: the next run fills in just that one
    assert all(r["text"] is not None for r in answer_all(cfg, records, tmp_path / "cache.jsonl")["base"])


def test_config_errors_name_the_field(tmp_path):
    from lightalign.errors import UserError

    base = {"base": {"path": "b"}, "dataset": {"path": "x.jsonl"}, "judges": [{"kind": "refusal"}]}
    cases = [
        ({"systems": [{"name": "a", "kind": "adapter"}]}, r"systems\[0\] \(a\): kind 'adapter' needs 'adapter'"),
        ({"systems": [{"name": "a", "kind": "aligner"}]}, "needs 'aligner'"),
        ({"systems": [{"name": "a", "kind": "openai"}]}, "needs an 'endpoint'"),
        ({"systems": [{"name": "a", "kind": "openai", "endpoint": {"url": "localhost:8000", "model": "m"}}]},
         "must start with http"),
        ({"systems": [{"name": "a", "kind": "base"}, {"name": "a", "kind": "urial"}]}, "duplicate names"),
        ({"systems": [{"name": "a", "kind": "lora"}]}, r"systems\[0\]\.kind' must be one of"),
        ({"systems": [{"name": "a", "kind": "base"}], "judges": [{"kind": "pairwise", "reference": "zzz",
          "endpoint": {"url": "http://127.0.0.1:1/v1", "model": "j"}}]}, "reference 'zzz' is not a system"),
        ({"systems": [{"name": "a", "kind": "base"}], "judges": [{"kind": "flask", "skills": ["Wit"],
          "endpoint": {"url": "http://127.0.0.1:1/v1", "model": "j"}}]}, "unknown skills"),
        ({"systems": [{"name": "a", "kind": "base"}], "genration": {}}, "did you mean 'generation'"),
    ]
    for extra, msg in cases:
        with pytest.raises(UserError, match=msg):
            from_dict(EvalConfig, {**base, **extra}, source="eval.yaml")


def _adapter(path, base, quantization=None):
    import json

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    if quantization:
        (path / "run_config.json").write_text(json.dumps({"model": {"name_or_path": base,
                                                                    "quantization": quantization}}))
    return str(path)


def _cfg(base: dict, adapters: list[str], extra_systems=()):
    return from_dict(EvalConfig, {
        "base": base, "dataset": {"path": "x.jsonl"}, "judges": [{"kind": "refusal"}],
        "systems": [{"name": "base", "kind": "base"}, *extra_systems,
                    *({"name": f"a{i}", "kind": "adapter", "adapter": a} for i, a in enumerate(adapters))]})


def test_adapter_folders_name_their_base_and_quantization(tmp_path):
    from lightalign.evaluation.config import resolve_base

    a = _adapter(tmp_path / "dpo", "models/base", "nf4")
    b = _adapter(tmp_path / "sft", "models/base", "nf4")
    got = resolve_base(_cfg({}, [a, b]))
    assert (got.path, got.quantization) == ("models/base", "nf4")
    # what the config says wins; an adapter without run_config.json says nothing about quantization
    got = resolve_base(_cfg({"path": "other", "quantization": "none"}, [a]))
    assert (got.path, got.quantization) == ("other", "none")
    plain = _adapter(tmp_path / "plain", "models/base")
    assert resolve_base(_cfg({}, [plain])).quantization == "none"


def test_adapters_that_disagree_or_say_nothing_need_the_config(tmp_path):
    from lightalign.errors import UserError
    from lightalign.evaluation.config import resolve_base

    a = _adapter(tmp_path / "dpo", "models/base", "nf4")
    b = _adapter(tmp_path / "sft", "models/other", "none")
    with pytest.raises(UserError, match="disagree on their base model.*set base.path"):
        resolve_base(_cfg({}, [a, b]))
    with pytest.raises(UserError, match="disagree on their quantization.*set base.quantization"):
        resolve_base(_cfg({"path": "models/base"}, [a, b]))
    with pytest.raises(UserError, match="do not name their base"):
        resolve_base(_cfg({}, [str(tmp_path / "missing")]))
    with pytest.raises(UserError, match="base.path is required"):
        _cfg({}, [], [{"name": "al", "kind": "aligner", "aligner": "x"}])


def test_systems_load_the_base_the_adapter_names(lab, records, tmp_path, monkeypatch):
    """No base section at all: the shared model is the adapter's own base, in its training quantization."""
    loaded = []
    real = systems_mod.load_base_model
    monkeypatch.setattr(systems_mod, "load_base_model", lambda *a, **k: loaded.append(a) or real(*a, **k))
    cfg = from_dict(EvalConfig, {
        "systems": [{"name": "base", "kind": "base"},
                    {"name": "dpo", "kind": "adapter", "adapter": str(lab / "adapters" / "dpo")}],
        "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
        "generation": {"max_new_tokens": MAX_NEW, "batch_size": 3}, "output": str(tmp_path), "progress": False})
    replies = answer_all(cfg, records[:2], tmp_path / "cache.jsonl")
    assert loaded == [(str(lab / "base"), "none", False, False, False, "auto")]
    assert all(r["text"] is not None for r in replies["dpo"])


def test_numbers_that_make_no_sense_are_refused_before_any_model_loads(tmp_path):
    from lightalign.errors import UserError
    from lightalign.evaluation.runner import run_eval

    base = {"base": {"path": "b"}, "dataset": {"path": "x.jsonl"}, "judges": [{"kind": "refusal"}],
            "systems": [{"name": "a", "kind": "base"}]}
    endpoint = {"url": "http://127.0.0.1:1/v1", "model": "m"}
    cases = [
        ({"generation": {"max_new_tokens": 0}}, r"generation.max_new_tokens must be >= 1, got 0"),
        ({"generation": {"batch_size": -1}}, r"generation.batch_size must be >= 1"),
        ({"generation": {"temperature": -1}}, r"generation.temperature must be >= 0"),
        ({"generation": {"temperature": "nan"}}, r"'generation.temperature' expects a finite number"),
        ({"dataset": {"path": "x.jsonl", "limit": 0}}, r"dataset.limit must be >= 1"),
        ({"tax": {"batch_size": 0}}, r"tax.batch_size must be >= 1"),
        ({"judges": [{"kind": "refusal", "batch_size": 0}]}, r"judges\[0\] \(refusal\): batch_size must be >= 1"),
        ({"systems": [{"name": "a", "kind": "openai", "endpoint": {**endpoint, "concurrency": 0}}]},
         r"endpoint.concurrency must be >= 1"),
        ({"systems": [{"name": "a", "kind": "openai", "endpoint": {**endpoint, "timeout": 0}}]},
         r"endpoint.timeout must be > 0"),
    ]
    for extra, msg in cases:
        with pytest.raises(UserError, match=msg):
            from_dict(EvalConfig, {**base, **extra}, source="eval.yaml")
    (tmp_path / "afile").write_text("x")
    for output, msg in (("", "output folder \\(output\\) is empty"), (str(tmp_path / "afile"), "a file is in the way")):
        with pytest.raises(UserError, match=msg):
            run_eval(from_dict(EvalConfig, {**base, "output": output}, source="eval.yaml"))


def test_dequantized_nf4_base_computes_what_its_4bit_layers_compute(tiny_model_dir, tmp_path):
    """`base.dequantize`: the adapters' NF4 weights in full precision (fast on a CPU), same outputs as the
    4-bit layers as training runs them, and a cache key of its own."""
    import torch
    from bitsandbytes.nn import Linear4bit

    from lightalign.loading import keep_4bit_layout_trainable, load_for_inference

    four_bit, tok = load_for_inference(str(tiny_model_dir), quantization="nf4")
    keep_4bit_layout_trainable(four_bit)  # the layout training computes with
    dense, _ = systems_mod.load_base_model(str(tiny_model_dir), "nf4", dequantize=True)
    plain, _ = systems_mod.load_base_model(str(tiny_model_dir), "none")
    assert any(isinstance(m, Linear4bit) for m in four_bit.modules())
    assert not any(isinstance(m, Linear4bit) for m in dense.modules())
    ids = tok("Where is Marosk?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = four_bit(ids).logits
        torch.testing.assert_close(dense(ids).logits, reference, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain(ids).logits, reference, atol=1e-3)  # NF4 rounding is really there

    def identity(**base):
        cfg = from_dict(EvalConfig, {"base": {"path": str(tiny_model_dir), "quantization": "nf4", **base},
                                     "systems": [{"name": "base", "kind": "base"}],
                                     "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
                                     "output": str(tmp_path)})
        with GenerationCache(tmp_path / "cache.jsonl") as cache:
            return Systems(cfg, cache).upstream_identity(cfg.systems[0])

    assert identity() != identity(dequantize=True) != identity(dequantize=True, compute_dtype="bf16")


def test_aligner_mode_gives_what_a_streamed_answer_gets(lab, records, tmp_path):
    """aligner_mode sentence / guided: the replies equal the library's sentence loop on the same upstream
    answers (guided continues the base from each corrected prefix), cached apart from whole-answer ones."""
    from lightalign.aligner import Aligner
    from lightalign.aligner.streaming import correct_by_sentence

    cfg = from_dict(EvalConfig, {
        "base": {"path": str(lab / "base")},
        "systems": [{"name": mode, "kind": "aligner", "aligner": str(lab / "aligner"), "aligner_mode": mode}
                    for mode in ("whole", "sentence", "guided")],
        "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
        "generation": {"max_new_tokens": MAX_NEW, "batch_size": 3}, "output": str(tmp_path), "progress": False})
    got = answer_all(cfg, records, tmp_path / "cache.jsonl")
    upstream = [r["upstream"] for r in got["whole"]]
    assert [r["upstream"] for r in got["sentence"]] == upstream
    pairs = list(zip([r["prompt"] for r in records], upstream))
    aligner = Aligner.from_pretrained(lab / "aligner")
    assert [r["text"] for r in got["sentence"]] == [o["text"] for o in correct_by_sentence(aligner, pairs)]
    assert [r["text"] for r in got["whole"]] == [c.text for c in aligner.correct_batch(pairs)]
    assert all(r["text"] is not None for r in got["guided"])


def test_guided_aligner_mode_needs_a_local_upstream(tmp_path):
    with pytest.raises(Exception, match="guided"):
        from_dict(EvalConfig, {"systems": [{"name": "x", "kind": "openai", "aligner": "a", "aligner_mode": "guided",
                                            "endpoint": {"url": "http://127.0.0.1:1/v1", "model": "m"}}],
                               "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
                               "output": str(tmp_path)}).validate()


def test_aligner_options_decode_as_the_aligner_loaded_with_them(lab, records, tmp_path):
    """aligner_options set Aligner.from_pretrained's settings per system: one folder, two decodings in one
    run, each equal to the library's own call with those settings, cached apart."""
    from lightalign.aligner import Aligner

    options = {"copy_bias": 50.0, "max_new_tokens": 6}
    cfg = from_dict(EvalConfig, {
        "base": {"path": str(lab / "base")},
        "systems": [{"name": "saved", "kind": "aligner", "aligner": str(lab / "aligner")},
                    {"name": "copying", "kind": "aligner", "aligner": str(lab / "aligner"), "aligner_options": options}],
        "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
        "generation": {"max_new_tokens": MAX_NEW, "batch_size": 3}, "output": str(tmp_path), "progress": False})
    got = answer_all(cfg, records, tmp_path / "cache.jsonl")
    pairs = list(zip([r["prompt"] for r in records], [r["upstream"] for r in got["saved"]]))
    assert [r["text"] for r in got["saved"]] == [c.text for c in Aligner.from_pretrained(lab / "aligner").correct_batch(pairs)]
    assert [r["text"] for r in got["copying"]] == [
        c.text for c in Aligner.from_pretrained(lab / "aligner", **options).correct_batch(pairs)]
    assert [r["text"] for r in got["copying"]] != [r["text"] for r in got["saved"]]


def test_aligner_options_are_checked_by_name(tmp_path):
    def cfg(system):
        return from_dict(EvalConfig, {"systems": [{"name": "x", "kind": "aligner", **system}],
                                      "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
                                      "output": str(tmp_path)})

    with pytest.raises(Exception, match="unknown aligner_options copy_bais"):
        cfg({"aligner": "a", "aligner_options": {"copy_bais": 1.0}}).validate()
    with pytest.raises(Exception, match="aligner_options is set but the system has no 'aligner'"):
        from_dict(EvalConfig, {"systems": [{"name": "x", "kind": "base", "aligner_options": {"gate": False}}],
                               "dataset": {"path": "unused.jsonl"}, "judges": [{"kind": "refusal"}],
                               "output": str(tmp_path)}).validate()
