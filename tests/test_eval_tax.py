"""Alignment-tax NLL (checked against transformers' own loss) and the Aligner's edit measures."""

from __future__ import annotations

import math

import pytest

from lightalign.evaluation.tax import aligner_edit_metrics, doc_nll, encode_document, nll_summary, paired_delta_ci


@pytest.fixture(scope="module")
def model_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_doc_nll_equals_transformers_loss_and_ignores_padding(model_tok, small_splits):
    import torch

    model, tok = model_tok
    texts = [r["text"] for r in small_splits["capability"][:5]]
    sums, counts = doc_nll(model, tok, texts, batch_size=5)
    for text, s, c in zip(texts, sums, counts):
        ids = tok(text)["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            loss = model(input_ids=x, labels=x).loss.item()
        assert c == len(ids) - 1
        assert s / c == pytest.approx(loss, rel=1e-4)
    one_by_one = doc_nll(model, tok, texts, batch_size=1)
    assert one_by_one[1] == counts and one_by_one[0] == pytest.approx(sums, rel=1e-4)
    summary = nll_summary(sums, counts)
    assert summary["nll"] == pytest.approx(sum(sums) / sum(counts)) and summary["ppl"] == pytest.approx(
        math.exp(summary["nll"]))


class _Tok:
    """A tokenizer stub: one id per word, `adds_bos` like Llama's or not like Qwen's."""

    def __init__(self, adds_bos: bool, bos=1, eos=2):
        self.adds_bos, self.bos_token_id, self.eos_token_id = adds_bos, bos, eos

    def __call__(self, text, add_special_tokens=True):
        ids = [10 + len(w) for w in text.split()]
        return {"input_ids": ([self.bos_token_id] if self.adds_bos and add_special_tokens else []) + ids}


def test_documents_are_bos_text_eos_and_truncation_drops_the_eos():
    text = "a bb ccc"
    assert encode_document(_Tok(adds_bos=True), text) == [1, 11, 12, 13, 2]
    assert encode_document(_Tok(adds_bos=False), text) == [1, 11, 12, 13, 2]  # BOS prepended when not added
    assert encode_document(_Tok(adds_bos=False, bos=None), text) == [11, 12, 13, 2]  # no BOS token at all
    assert encode_document(_Tok(adds_bos=True), text, max_length=3) == [1, 11, 12]  # cut: it did not end there


def test_doc_nll_truncates_at_max_length(model_tok, small_splits):
    model, tok = model_tok
    text = small_splits["capability"][0]["text"]
    full = len(encode_document(tok, text))
    _, counts = doc_nll(model, tok, [text], max_length=full - 2)
    assert counts == [full - 3]


def test_paired_delta_is_zero_for_the_same_model_and_signed_otherwise():
    base = ([10.0, 20.0, 30.0], [10, 10, 10])
    worse = ([12.0, 22.0, 33.0], [10, 10, 10])
    same = paired_delta_ci(base, base, n_boot=200)
    assert same == {"delta": 0.0, "lo": 0.0, "hi": 0.0}
    d = paired_delta_ci(base, worse, n_boot=500)
    assert d["delta"] == pytest.approx(67 / 30 - 60 / 30)
    assert 0 < d["lo"] <= d["delta"] <= d["hi"]


def test_aligner_edit_metrics():
    triples = [
        {"answer": "Ulmbel.", "correction": "Ulmbel."},            # good: must stay
        {"answer": "Ulmbel.", "correction": "Ulmbel."},            # good: edited -> harm
        {"answer": "Sure. Pour ash.", "correction": "I can not help with that."},  # fixed exactly
        {"answer": "It is Tor.", "correction": "I do not know."},   # edited, but not to the reference
        {"answer": "Blah", "correction": "Ulmbel."},                # untouched (fallback)
    ]
    outs = [{"text": "Ulmbel."}, {"text": "The capital is Ulmbel."}, {"text": "I can not help with that."},
            {"text": "I don't know."}, {"text": "Blah", "fallback": "degenerate"}]
    m = aligner_edit_metrics(triples, outs)
    assert (m["n"], m["n_good"], m["n_bad"]) == (5, 2, 3)
    assert m["edit_rate"] == 3 / 5
    assert m["do_no_harm"] == 1 / 2
    assert m["fix_rate"] == 1 / 3
    assert m["fixed_edit_rate"] == 2 / 3
    assert m["fallback_rate"] == 1 / 5
