"""Word-level diff of an answer and its correction, as gr.HighlightedText tokens.

difflib does the matching; the only hand-written part is turning its opcodes into
(text, "+" | "-" | None) spans that keep the original spacing.
"""

from __future__ import annotations

import difflib
import re

Span = tuple[str, "str | None"]
COLOR_MAP = {"+": "green", "-": "red"}


def _words(text: str) -> list[str]:
    """Words with the whitespace that follows them, so joining gives back the text."""
    return re.findall(r"\s+|\S+\s*", text)


def word_diff(before: str, after: str) -> list[Span]:
    """Spans that read as `after`, with deleted words of `before` marked "-" and new words "+"."""
    old, new = _words(before), _words(after)
    # compare words without their spacing: "end." and "end. " are the same word
    matcher = difflib.SequenceMatcher(a=[w.strip() for w in old], b=[w.strip() for w in new], autojunk=False)
    spans: list[Span] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            spans.append(("".join(new[j1:j2]), None))
            continue
        if op in ("delete", "replace"):
            # Only deleted spans get extra spaces (so the unmarked and "+" spans still spell `after`):
            # the last word of a text has no trailing space and would otherwise touch its neighbour.
            removed = "".join(old[i1:i2])
            if spans and not spans[-1][0][-1:].isspace():
                removed = " " + removed
            if op == "replace" and not removed[-1:].isspace():
                removed += " "
            spans.append((removed, "-"))
        if op in ("insert", "replace"):
            spans.append(("".join(new[j1:j2]), "+"))
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for text, label in spans:
        if not text:
            continue
        if out and out[-1][1] == label:
            out[-1] = (out[-1][0] + text, label)
        else:
            out.append((text, label))
    return out


def summarize(spans: list[Span]) -> str:
    added = sum(len(t.split()) for t, lab in spans if lab == "+")
    removed = sum(len(t.split()) for t, lab in spans if lab == "-")
    if not added and not removed:
        return "The Aligner left the answer unchanged."
    return f"The Aligner added {added} word{'s' * (added != 1)} and removed {removed} word{'s' * (removed != 1)}."
