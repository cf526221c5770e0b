"""The app's Aligner column in the streamed modes (AppConfig.aligner_mode), on the app lab's real tiny
models: it fills sentence by sentence while the base answer is still streaming, and ends with what
the library's sentence loop gives for that answer."""

from __future__ import annotations

import pytest

from helpers.app_lab import ABSTAIN, app_config, base_answer

MAX_NEW = 48


@pytest.fixture(scope="module")
def prompt(app_lab, small_splits):
    from lightalign.aligner.sentences import split_sentences

    for rec in small_splits["eval_prompts"][:60]:
        if len(split_sentences(base_answer(app_lab, rec["prompt"], MAX_NEW))) >= 2:
            return rec["prompt"]
    pytest.fail("the tiny base never answers in two sentences")


def snapshots(app_lab, prompt, mode):
    from lightalign.app.compare import compare
    from lightalign.app.examples import Examples
    from lightalign.app.models import GenSettings, Models

    cfg = app_config(app_lab, aligner_mode=mode)
    models = Models(cfg)
    seen = []
    for snap in compare(models, Examples.from_config(cfg), prompt, GenSettings(max_new_tokens=MAX_NEW)):
        seen.append({c: (col.text, col.note) for c, col in snap.columns.items()})
    return seen, snap


def test_sentence_mode_fills_the_aligner_column_while_the_base_streams(app_lab, prompt):
    from lightalign.aligner import Aligner
    from lightalign.aligner.streaming import correct_by_sentence

    seen, last = snapshots(app_lab, prompt, "sentence")
    answer = base_answer(app_lab, prompt, MAX_NEW)
    assert last.columns["base"].text == answer
    early = [s for s in seen if s["aligner"][0] and s["base"][0] != answer]
    assert early, "the Aligner column only filled once the base answer was complete"
    want = correct_by_sentence(Aligner.from_pretrained(app_lab / "aligner"), [(prompt, answer)])[0]["text"]
    assert last.columns["aligner"].text == want == ABSTAIN
    assert last.diff_summary


def test_guided_mode_continues_the_base_from_the_corrected_text(app_lab, prompt):
    seen, last = snapshots(app_lab, prompt, "guided")
    assert last.columns["aligner"].text == ABSTAIN
    assert any("guided" in s["base"][1] for s in seen)
