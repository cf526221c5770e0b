"""One comparison: base, base + adapter, and the Aligner's correction, as a stream of snapshots.

Kept free of gradio so it can be tested and reused; ui.py maps each snapshot onto the page.
A part that is missing or fails fills its own column with the reason; only a failing base model
(nothing to compare) stops the run. With `aligner_mode` sentence or guided (AppConfig), the Aligner
column fills sentence by sentence while the base answer streams (lightalign.aligner.streaming).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from lightalign.app.diff import summarize, word_diff
from lightalign.app.examples import Examples
from lightalign.app.models import GenSettings, Models, PartMissing, PromptError, describe_error

COLUMNS = ("base", "adapter", "aligner", "adapter_aligner")
TITLES = {
    "base": "Base",
    "adapter": "Base + adapter",
    "aligner": "Base → Aligner",
    "adapter_aligner": "Base + adapter → Aligner",
}


@dataclass
class Column:
    text: str = ""
    note: str = ""       # state or problem ("generating…", "no adapter: …", "Aligner failed: …")
    verdict: str = ""    # the judge's line, once the answer is complete


@dataclass
class Snapshot:
    columns: dict[str, Column] = field(default_factory=lambda: {c: Column() for c in COLUMNS})
    diff: list = field(default_factory=list)
    diff_summary: str = ""
    adapter_diff: list = field(default_factory=list)
    adapter_diff_summary: str = ""


def check_prompt(prompt: str, max_chars: int) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise PromptError("Type a prompt first.")
    if len(prompt) > max_chars:
        raise PromptError(f"The prompt is {len(prompt):,} characters long; this app accepts at most "
                          f"{max_chars:,} (max_prompt_chars). Shorten it and try again.")
    return prompt


def _correction_note(result) -> str:
    reason = getattr(result, "fallback", None)
    if reason:
        return f"The Aligner's output was unusable ({reason}), so the original answer is kept."
    return "Corrected." if getattr(result, "changed", True) else "The Aligner kept the answer as it was."


def compare(models: Models, examples: Examples, prompt: str, settings: GenSettings,
            correct_adapter: bool = False) -> Iterator[Snapshot]:
    prompt = check_prompt(prompt, models.cfg.max_prompt_chars)
    if models.model is None:  # nothing to compare: say so at once, before any column claims to be busy
        raise PartMissing(f"base model {models.status['base'].message}")
    snap = Snapshot()
    cols = snap.columns
    if not correct_adapter:
        cols["adapter_aligner"].note = "Off: tick 'also correct the adapter's answer'."

    # 1. base weights alone (a failure here is the whole request's failure)
    cols["base"].note = "generating…"
    yield snap
    mode = getattr(models.cfg, "aligner_mode", "whole")
    streamed = mode != "whole" and _aligner_ready(models)
    if streamed:
        yield from _stream_corrected(models, examples, prompt, settings, snap, mode)
    else:
        for text in models.stream(prompt, adapter=False, settings=settings):
            cols["base"].text = text
            yield snap
    cols["base"].note = ""
    cols["base"].verdict = examples.verdicts(prompt, cols["base"].text)

    # 2. same weights with the adapter switched on
    if models.has_adapter:
        cols["adapter"].note = "generating…"
        yield snap
        try:
            for text in models.stream(prompt, adapter=True, settings=settings):
                cols["adapter"].text = text
                yield snap
            cols["adapter"].note = ""
            cols["adapter"].verdict = examples.verdicts(prompt, cols["adapter"].text)
        except Exception as e:  # noqa: BLE001 - shown in the column, the others still run
            cols["adapter"].note = f"⚠ The adapter failed: {describe_error(e)}"
    else:
        cols["adapter"].note = f"⚠ No adapter: {models.status['adapter'].message}"
    yield snap

    # 3. the Aligner post-edits the base answer (and, if asked, the adapter's)
    jobs = ([] if streamed else [("aligner", "base")]) + ([("adapter_aligner", "adapter")] if correct_adapter else [])
    for col, source in jobs:
        answer = cols[source].text
        if source == "adapter" and not models.has_adapter:
            cols[col].note = "⚠ No adapter answer to correct."
            continue
        cols[col].note = "correcting…"
        yield snap
        try:
            result = models.correct(prompt, answer)
        except PartMissing as e:
            cols[col].note = f"⚠ No Aligner: {e}"
            yield snap
            continue
        except Exception as e:  # noqa: BLE001
            cols[col].note = f"⚠ The Aligner failed: {describe_error(e)}"
            yield snap
            continue
        cols[col].text = result.text
        cols[col].note = _correction_note(result)
        cols[col].verdict = examples.verdicts(prompt, result.text)
        spans = word_diff(answer, result.text)
        if col == "aligner":
            snap.diff, snap.diff_summary = spans, summarize(spans)
        else:
            snap.adapter_diff, snap.adapter_diff_summary = spans, summarize(spans)
        yield snap


def _aligner_ready(models: Models) -> bool:
    try:
        return models.aligner() is not None
    except Exception:  # noqa: BLE001 - the whole-answer path shows why in the column
        return False


def _stream_corrected(models: Models, examples: Examples, prompt: str, settings: GenSettings, snap: Snapshot,
                      mode: str) -> Iterator[Snapshot]:
    """The base answer streams into its column while each finished sentence is revised into the Aligner
    column (sentence mode); guided also restarts the base from the corrected text after a change (the
    base column then shows what it was asked to continue). A refusal stops the base at once."""
    from lightalign.aligner.streaming import MAX_ROUNDS, SentenceStreamer

    cols = snap.columns
    st = SentenceStreamer(prompt)
    cols["aligner"].note = "correcting sentence by sentence…"
    rounds, lead = 0, ""
    upstream = models.stream(prompt, adapter=False, settings=settings)
    try:
        while True:
            seen, restart = "", False
            for text in upstream:
                delta = lead + (text[len(seen):] if text.startswith(seen) else text)
                lead, seen = "", text
                cols["base"].text = text if rounds == 0 else f"{st.sent} {text}"
                for piece in st.feed(delta):
                    st.accept(piece, models.correct_sentence(*st.request(piece)))
                    cols["aligner"].text = st.sent
                    if st.refused or (mode == "guided" and st.last_changed and rounds < MAX_ROUNDS):
                        restart = not st.refused
                        break
                yield snap
                if st.refused or restart:
                    break
            if not restart:
                break
            upstream.close()
            rounds += 1
            st.restart()
            cols["base"].note = "guided: continuing from the corrected text"
            upstream, lead = models.stream(prompt, adapter=False, settings=settings, prefix=st.sent), " "
        if not st.refused:
            for piece in st.finish():
                st.accept(piece, models.correct_sentence(*st.request(piece)))
                if st.refused:
                    break
    finally:
        upstream.close()
    cols["aligner"].text = st.sent
    cols["aligner"].note = ("Refused: the base was stopped." if st.refused else
                            "Corrected sentence by sentence." if st.changed else "The Aligner kept every sentence.")
    if st.fallbacks:
        cols["aligner"].note += f" (kept some sentences: {', '.join(sorted(set(st.fallbacks)))})"
    cols["aligner"].verdict = examples.verdicts(prompt, st.sent)
    snap.diff = word_diff(st.original, st.sent)
    snap.diff_summary = summarize(snap.diff)
    yield snap
