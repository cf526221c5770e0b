"""Guarded output: a correction that is empty, stuck in a repetition loop or cut off by the token
limit is worse than the answer it replaces, so the Aligner keeps the original and says why. A correction
that runs on into its own prompt's field markers ("...\n##Question: ..." after copying an answer that was
cut off mid-sentence) is cut where the echo starts.
"""

from __future__ import annotations

import re

MAX_NGRAM = 8  # loops of up to 8 words
MIN_REPEATS = {1: 6}  # "very very very very very very"; longer n-grams: 4 back-to-back copies
DEFAULT_REPEATS = 4
_CHAR_LOOP = re.compile(r"(.{1,12}?)\1{9,}", re.DOTALL)  # "!!!!!!!!!!" or "abababab..." without spaces


def cut_at_markers(text: str, original: str, markers) -> str:
    """`text` up to the first prompt field marker ("##Question:") that the original answer does not hold."""
    cut = len(text)
    for marker in markers:
        if marker not in original:
            at = text.find(marker)
            if at != -1:
                cut = min(cut, at)
    return text[:cut].rstrip()


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _longest_runs(words: list[str]) -> dict[tuple, int]:
    """For every n-gram that repeats back to back, the longest run of copies."""
    runs: dict[tuple, int] = {}
    for n in range(1, MAX_NGRAM + 1):
        i = 0
        while i + 2 * n <= len(words):
            gram = tuple(words[i:i + n])
            k = 1
            while words[i + k * n:i + (k + 1) * n] == list(gram):
                k += 1
            if k > 1:
                runs[gram] = max(runs.get(gram, 0), k)
                i += (k - 1) * n
            else:
                i += 1
    return runs


def is_degenerate(text: str, original: str = "") -> bool:
    """A repetition loop the original answer does not have itself (quoting a loop is not a loop)."""
    original_runs = _longest_runs(_words(original))
    for gram, k in _longest_runs(_words(text)).items():
        if k >= MIN_REPEATS.get(len(gram), DEFAULT_REPEATS) and original_runs.get(gram, 0) < k:
            return True
    loop = _CHAR_LOOP.search(text)
    return bool(loop) and loop.group(0) not in original


def fallback_reason(text: str, original: str, finished: bool) -> str | None:
    """Why the correction must not be used ("empty", "degenerate", "truncated"), or None if it is fine."""
    if not text.strip():
        return "empty"
    if is_degenerate(text, original):
        return "degenerate"
    if not finished:
        return "truncated"
    return None
