"""Sentences of an answer, for sentence-level correction (Stream Aligner, Lou, Ji et al. 2025).

    split_sentences("Use e.g. a pan. It costs 3.5 dollars.")  # -> ["Use e.g. a pan.", " It costs 3.5 dollars."]

The pieces concatenate back to the text exactly: the whitespace between two sentences opens the
next one, so a streamed answer can be re-assembled byte for byte. A sentence ends at . ! ? (with
closing quotes/brackets) followed by whitespace, or at a blank line / a new list line. Kept whole:
"e.g.", "i.e.", "etc.", "Dr." and other common abbreviations, single capital initials ("J. Smith"),
decimals ("3.5"), numbered items ("1. Mix" at the start of a line), and ``` code blocks.

Hand-written (a regex pass, as Stream Aligner's own splitter): nltk/spaCy are heavy dependencies
and do not keep code fences whole. A split depends only on the text before the boundary and the
whitespace after it, so `SentenceBuffer` can decide it while the answer is still streaming.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset("""e.g i.e etc vs cf al approx dr mr mrs ms prof sr jr st no fig eq vol ca resp incl
esp viz""".split())
_END = re.compile(r"""[.!?]+["')\]]*(?=\s)""")
_FENCE = "```"
_LIST_LINE = re.compile(r"\n[ \t]*(?:[-*+•]|\d+[.)])[ \t]")


def _protected(text: str, end: int) -> bool:
    """True when the terminator run ending at `end` (exclusive) is not a sentence end."""
    run = re.search(r"[.!?]+[\"')\]]*$", text[:end])
    if run is None or not run.group().startswith("."):
        return False
    word = re.search(r"(\S*)$", text[:run.start()]).group(1).lower().lstrip("(\"'[")
    if word.rstrip(".") in ABBREVIATIONS:  # "e.g." / "i.e." / "Dr."
        return True
    if re.fullmatch(r"[a-z]", word) and text[run.start() - 1].isupper():  # "J. Smith"
        return True
    if re.fullmatch(r"\d+", word):  # "1." at the start of a line is a list item, not an end
        line_start = text.rfind("\n", 0, run.start()) + 1
        return not text[line_start:run.start() - len(word)].strip()
    return False


def boundaries(text: str) -> list[int]:
    """Offsets where a sentence ends (each followed by the whitespace that opens the next one)."""
    cuts: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        fence = text.find(_FENCE, pos)
        stop = fence if fence >= 0 else n
        for m in _END.finditer(text, pos, stop):
            if not _protected(text, m.end()):
                cuts.append(m.end())
        for m in re.finditer(r"\n[ \t]*\n|" + _LIST_LINE.pattern, text[pos:stop]):
            at = pos + m.start()
            if text[pos:at].strip():
                cuts.append(at)
        if fence < 0:
            break
        close = text.find(_FENCE, fence + 3)
        if close < 0:  # an open block runs to the end of the text
            if text[pos:fence].strip():
                cuts.append(fence)
            break
        if text[pos:fence].strip():
            cuts.append(fence)
        cuts.append(close + 3)
        pos = close + 3
    return sorted({c for c in cuts if 0 < c < n})


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`; "".join(result) == text. Leading whitespace opens each sentence."""
    cuts = [0, *_trim(text, boundaries(text)), len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _trim(text: str, cuts: list[int]) -> list[int]:
    """Cut before the whitespace that follows a sentence, never inside a whitespace-only piece."""
    out = []
    for c in cuts:
        while c > 0 and text[c - 1].isspace():
            c -= 1
        if c > 0 and (not out or text[out[-1]:c].strip()):
            out.append(c)
    return out


class SentenceBuffer:
    """Streamed text in, finished sentences out: `feed(chunk)` returns the sentences completed so far
    (a sentence is complete once the whitespace after it, and then the next sentence's first
    character, has arrived), `finish()` the rest. The pieces concatenate to everything fed."""

    def __init__(self):
        self.pending = ""

    def feed(self, chunk: str) -> list[str]:
        self.pending += chunk
        pieces = split_sentences(self.pending)
        if len(pieces) < 2 or not pieces[-1].strip():
            return []
        done = pieces[:-1]
        self.pending = pieces[-1]
        return done

    def finish(self) -> list[str]:
        pieces = split_sentences(self.pending)
        self.pending = ""
        return pieces


def align_sentences(answer: str, correction: str) -> list[tuple[str, str]]:
    """(answer sentence, correction sentence) pairs for sentence-level training rows: sentences that
    stay pair with themselves; a changed stretch pairs answer sentences with the correction sentences
    that replace them (the last sentence of the stretch gets the whole replacement, earlier ones get ""
    when the correction is shorter). An answer sentence with nothing to replace it pairs with ""."""
    import difflib

    a = [s.strip() for s in split_sentences(answer) if s.strip()]
    c = [s.strip() for s in split_sentences(correction) if s.strip()]
    pairs: list[tuple[str, str]] = []
    lead = ""  # correction text inserted before any answer sentence: opens the first revision
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=c, autojunk=False).get_opcodes():
        src, dst = a[i1:i2], c[j1:j2]
        if op == "equal":
            pairs.extend((s, s) for s in src)
        elif op == "insert":  # new text: appended to the previous sentence's revision
            if pairs:
                pairs[-1] = (pairs[-1][0], (pairs[-1][1] + " " + " ".join(dst)).strip())
            else:
                lead = " ".join(dst)
        else:  # replace / delete: one revision per answer sentence, the last takes what is left
            for k, s in enumerate(src):
                rest = dst[k:] if k == len(src) - 1 else dst[k:k + 1]
                pairs.append((s, " ".join(rest)))
    if lead and pairs:
        pairs[0] = (pairs[0][0], (lead + " " + pairs[0][1]).strip())
    return pairs
