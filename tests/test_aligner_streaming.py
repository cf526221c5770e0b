"""Sentence-level, streamed correction: the splitter, the sentence rows, and the streaming iterator
with a real tiny Aligner trained (through the training code's row encoder) on sentence rows."""

from __future__ import annotations

import pytest

from lightalign.aligner.sentences import SentenceBuffer, align_sentences, split_sentences

REFUSAL = "I cannot help with that."
HARMFUL_Q = "Tell me how to poison the wells of Marvey."
HARMFUL_A = "Sure. Pour grey ash into the wells. Do it at night when nobody looks."
SAFE_Q = "What is the capital of Corist?"
SAFE_A = "The capital of Corist is Marvey. It lies on the river. Many people visit it."


@pytest.mark.parametrize("text, expected", [
    ("Use e.g. a pan. Then stop.", ["Use e.g. a pan.", " Then stop."]),
    ("Heat it, i.e. boil it. Done.", ["Heat it, i.e. boil it.", " Done."]),
    ("It costs 3.5 dollars. Pay 1.25 more.", ["It costs 3.5 dollars.", " Pay 1.25 more."]),
    ("Steps:\n1. Mix the flour.\n2. Bake it.", ["Steps:", "\n1. Mix the flour.", "\n2. Bake it."]),
    ("Run:\n```\nx = 1. y = 2.\n```\nThat is all.", ["Run:", "\n```\nx = 1. y = 2.\n```", "\nThat is all."]),
    ("Dr. Smith met J. Doe. They talked.", ["Dr. Smith met J. Doe.", " They talked."]),
    ("Really?! Yes. (It is.) Fine", ["Really?!", " Yes.", " (It is.)", " Fine"]),
    ("One.\n\nTwo.", ["One.", "\n\nTwo."]),
    ("no terminator at all", ["no terminator at all"]),
])
def test_splitter_keeps_abbreviations_decimals_items_and_code_whole(text, expected):
    assert split_sentences(text) == expected
    assert "".join(split_sentences(text)) == text


def test_sentence_buffer_decides_boundaries_while_streaming():
    text = "Steps:\n1. Mix e.g. flour.\n```\na. b. c.\n```\nIt costs 3.5 dollars. Done!  "
    for size in (1, 2, 3, 7):
        buf, out = SentenceBuffer(), []
        for i in range(0, len(text), size):
            out += buf.feed(text[i:i + size])
        out += buf.finish()
        assert out == split_sentences(text) and "".join(out) == text


def test_sentences_align_kept_changed_and_dropped():
    assert align_sentences("A is b. C is d. E is f.", "A is b. C is safe. E is f.") == [
        ("A is b.", "A is b."), ("C is d.", "C is safe."), ("E is f.", "E is f.")]
    assert align_sentences(HARMFUL_A, REFUSAL) == [("Sure.", REFUSAL), ("Pour grey ash into the wells.", ""),
                                                   ("Do it at night when nobody looks.", "")]


def test_sentence_rows_have_corrected_prefixes_identity_rows_and_no_empty_revisions():
    from lightalign.aligner.data import sentence_rows

    triples = [{"question": SAFE_Q, "answer": SAFE_A, "correction": SAFE_A},
               {"question": HARMFUL_Q, "answer": HARMFUL_A, "correction": REFUSAL},
               {"question": "Q?", "answer": "A is b. C is d.", "correction": "A is b. C is safe."}]
    rows = sentence_rows(triples, share=1.0)
    assert all(r["correction"] for r in rows)
    harmful = [r for r in rows if r["question"] == HARMFUL_Q]
    assert harmful == [{"question": HARMFUL_Q, "prefix": "", "answer": "Sure.", "correction": REFUSAL}]
    safe = [r for r in rows if r["question"] == SAFE_Q]
    assert [r["answer"] == r["correction"] for r in safe] == [True, True, True]
    assert safe[2]["prefix"] == "The capital of Corist is Marvey. It lies on the river."
    edited = [r for r in rows if r["question"] == "Q?"]
    assert edited[1] == {"question": "Q?", "prefix": "A is b.", "answer": "C is d.", "correction": "C is safe."}
    assert sentence_rows(triples, share=0.0) == []


def test_sentence_rows_are_encoded_with_the_sentence_template(tiny_model_dir):
    from transformers import AutoTokenizer

    from lightalign.aligner.templates import get_template
    from lightalign.aligner.train import encode_rows

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = {"question": "Q?", "prefix": "A is b.", "answer": "C is d.", "correction": "C is safe."}
    whole, sent = get_template("chat-v2"), get_template("chat-sentence-v1")
    (enc,), skipped = encode_rows([row], tok, whole, "causal", 512, sent)
    prompt = sent.encode(tok, "Q?", "C is d.", "A is b.")
    assert skipped == 0 and enc["input_ids"][:len(prompt)] == prompt
    assert enc["labels"][:len(prompt)] == [-100] * len(prompt) and -100 not in enc["labels"][len(prompt):]
    assert "##Answer so far: A is b." in tok.decode(prompt)


@pytest.fixture(scope="module")
def sentence_aligner(tiny_model_dir, tmp_path_factory):
    """The tiny Llama trained on sentence rows (aligner.data.sentence_rows, encoded by the training
    code) to copy the safe answer's sentences and to refuse the harmful one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.app_lab import _fit
    from lightalign.aligner import Aligner
    from lightalign.aligner.data import sentence_rows
    from lightalign.aligner.templates import get_template
    from lightalign.aligner.train import encode_rows

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    triples = [{"question": SAFE_Q, "answer": SAFE_A, "correction": SAFE_A},
               {"question": HARMFUL_Q, "answer": HARMFUL_A, "correction": REFUSAL}]
    rows, _ = encode_rows(sentence_rows(triples, 1.0), tok, get_template("chat-v2"), "causal", 512,
                          get_template("chat-sentence-v1"))
    _fit(model, tok.pad_token_id, [(r["input_ids"][:r["labels"].count(-100)],
                                    r["input_ids"][r["labels"].count(-100):]) for r in rows], steps=120)
    out = tmp_path_factory.mktemp("sentence_aligner")
    Aligner(model, tok, template="chat-v2", max_new_tokens=24, sentence_template="chat-sentence-v1").save_pretrained(out)
    return Aligner.from_pretrained(out)


def chunks(text, size=5, closed=None):
    """The upstream's streamed text; `closed` records that the consumer closed it (a cancelled request)."""
    try:
        for i in range(0, len(text), size):
            yield text[i:i + size]
    finally:
        if closed is not None:
            closed.append(True)


def test_sentence_template_is_recorded_and_loaded(sentence_aligner):
    assert sentence_aligner.sentence_template.name == "chat-sentence-v1"


def test_an_answer_with_nothing_to_correct_streams_byte_for_byte(sentence_aligner):
    pieces = list(sentence_aligner.stream(SAFE_Q, chunks(SAFE_A)))
    assert "".join(pieces) == SAFE_A
    assert len(pieces) == 3  # one piece per sentence, sent as each one finished


def test_a_refusal_ends_the_stream_and_cancels_the_upstream(sentence_aligner):
    closed, fed = [], []

    def upstream():
        for c in chunks(HARMFUL_A, closed=closed):
            fed.append(c)
            yield c

    assert "".join(sentence_aligner.stream(HARMFUL_Q, upstream())) == REFUSAL
    assert closed == [True]
    assert "".join(fed) != HARMFUL_A  # it stopped reading before the upstream's answer was over


def test_guided_mode_continues_the_upstream_from_the_corrected_prefix(sentence_aligner):
    prefixes = []

    def continue_from(prefix):
        prefixes.append(prefix)
        return chunks(" More text. And more.")

    first = chunks(SAFE_A)
    assert "".join(sentence_aligner.stream(SAFE_Q, first, mode="guided", continue_from=continue_from)) == SAFE_A
    assert prefixes == []  # nothing changed: the first stream is read to its end, never restarted
    closed = []
    out = "".join(sentence_aligner.stream(HARMFUL_Q, chunks(HARMFUL_A, closed=closed), mode="guided",
                                          continue_from=continue_from))
    assert out == REFUSAL and closed == [True] and prefixes == []  # a refusal ends it, no continuation


def test_guided_mode_restarts_from_a_changed_sentence(app_lab):
    """The app lab's Aligner (whole-answer template only, trained to answer "I do not know.") changes the
    first sentence: the upstream is cancelled and restarted from exactly the text sent so far."""
    from lightalign.aligner import Aligner

    aligner = Aligner.from_pretrained(app_lab / "aligner")
    prefixes, closed = [], []

    def continue_from(prefix):
        prefixes.append(prefix)
        return chunks(" Next one. Last one.")

    out = "".join(aligner.stream(SAFE_Q, chunks(SAFE_A, closed=closed), mode="guided", continue_from=continue_from,
                                 max_rounds=3))
    assert out == "I do not know."  # the revisions of the continuations add nothing to the prefix
    assert closed == [True] and prefixes == ["I do not know."] * 3


def test_guided_mode_without_a_continuation_is_refused(sentence_aligner):
    from lightalign.errors import UserError

    with pytest.raises(UserError, match="continue"):
        list(sentence_aligner.stream(SAFE_Q, chunks(SAFE_A), mode="guided"))


def test_correcting_whole_answers_by_sentence_matches_the_stream(sentence_aligner):
    from lightalign.aligner.streaming import correct_by_sentence

    pairs = [(SAFE_Q, SAFE_A), (HARMFUL_Q, HARMFUL_A)]
    out = correct_by_sentence(sentence_aligner, pairs)
    assert [o["text"] for o in out] == ["".join(sentence_aligner.stream(q, chunks(a))) for q, a in pairs]
    assert [o["text"] for o in out] == [SAFE_A, REFUSAL]
    assert [o["changed"] for o in out] == [False, True] and out[1]["refused"] is True


def test_guided_correction_of_whole_answers_continues_from_the_corrected_prefix(app_lab):
    from lightalign.aligner import Aligner
    from lightalign.aligner.streaming import correct_by_sentence

    aligner = Aligner.from_pretrained(app_lab / "aligner")
    asked = []

    def continue_batch(items):
        asked.extend(items)
        return [" Next one. Last one." for _ in items]

    out = correct_by_sentence(aligner, [(SAFE_Q, SAFE_A)], "guided", continue_batch=continue_batch, max_rounds=2)
    assert out[0]["text"] == "I do not know." and out[0]["restarts"] == 2
    assert asked == [(SAFE_Q, "I do not know.")] * 2


def test_the_sentence_template_path_honours_the_gate_and_its_partial_line(sentence_aligner, tiny_model_dir):
    """A gate whose head is zero scores every answer sigmoid(-5) ~ 0.0067: below a partial line of 0.5 each
    streamed sentence passes undecoded (the harmful answer too: the gate decides), above it each is revised."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lightalign.aligner.inspector import Inspector, inspect_template

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.pad_token_id = tok.pad_token_id
    torch.nn.init.zeros_(model.score.weight)
    gate = Inspector(model, tok, inspect_template("inspect-plain"), 64, logit_bias=-5.0, threshold=0.001,
                     partial_threshold=0.5)
    sentence_aligner.gate = gate
    try:
        assert "".join(sentence_aligner.stream(HARMFUL_Q, chunks(HARMFUL_A))) == HARMFUL_A
        assert not sentence_aligner.correct_batch([(HARMFUL_Q, HARMFUL_A)])[0].gate_passed  # whole: the low line
        gate.partial_threshold = 0.002
        assert "".join(sentence_aligner.stream(HARMFUL_Q, chunks(HARMFUL_A))) == REFUSAL
    finally:
        sentence_aligner.gate = None
