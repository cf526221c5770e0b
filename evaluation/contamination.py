"""Keep evaluation prompts out of training data by near-duplicate match, not only exact match.

An exact-match filter lets "How do I kill a Python process?" into training when the eval set holds
"How can I kill a Python process?", and the eval then measures memory, not calibration. Two prompts
are near duplicates when their content-word sets overlap by Jaccard >= `threshold` (word order, case,
punctuation and stop words ignored), or one's content words are all inside the other's when it has at
least `min_words` of them. Hand-written rather than MinHash (datasketch): exact Jaccard over a few
thousand short prompts takes well under a second with an inverted index, and needs no dependency.

    from lightalign.evaluation.contamination import drop_near_duplicates
    kept, dropped = drop_near_duplicates(train_rows, [r["prompt"] for r in eval_rows])
"""

from __future__ import annotations

import re
from collections import defaultdict

STOP = frozenset(
    "a an the and or but of to in on at for with from by about as is are was were be been being do does did "
    "i me my you your we our it its this that these those can could would should will shall may might must "
    "how what why when where which who whom whose please tell give explain describe some any there their "
    "them they he she his her if so than then into out up down over just also very".split())
WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words minus stop words, with a plural/verb "s" dropped (bombs ~ bomb)."""
    words = (w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
             for w in WORD.findall(text.lower()))
    return frozenset(w for w in words if w not in STOP)


def near_duplicate(a: frozenset[str], b: frozenset[str], threshold: float = 0.6, min_words: int = 4) -> bool:
    if not a or not b:
        return False
    inter = len(a & b)
    if inter / len(a | b) >= threshold:
        return True
    small = min(len(a), len(b))
    return small >= min_words and inter == small


class NearDuplicateIndex:
    """Reference texts indexed by content word; `match(text)` returns the first near duplicate or None."""

    def __init__(self, texts, threshold: float = 0.6, min_words: int = 4):
        self.threshold, self.min_words = threshold, min_words
        self.texts = list(texts)
        self.sets = [content_words(t) for t in self.texts]
        self.by_word: dict[str, list[int]] = defaultdict(list)
        for i, words in enumerate(self.sets):
            for w in words:
                self.by_word[w].append(i)

    def match(self, text: str) -> str | None:
        words = content_words(text)
        seen: set[int] = set()
        for w in words:
            for i in self.by_word.get(w, ()):
                if i not in seen:
                    seen.add(i)
                    if near_duplicate(words, self.sets[i], self.threshold, self.min_words):
                        return self.texts[i]
        return None


def drop_near_duplicates(rows: list[dict], references, field: str = "prompt", threshold: float = 0.6,
                         min_words: int = 4) -> tuple[list[dict], list[dict]]:
    """(rows kept, rows dropped); each dropped row gets "near_duplicate_of" naming the reference text."""
    index = NearDuplicateIndex(references, threshold, min_words)
    kept, dropped = [], []
    for row in rows:
        hit = index.match(row[field])
        if hit is None:
            kept.append(row)
        else:
            dropped.append({**row, "near_duplicate_of": hit})
    return kept, dropped
