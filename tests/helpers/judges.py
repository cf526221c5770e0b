"""A rule judge in the plugin protocol (name, metrics, score), for the eval tests' `kind: python` judges."""

from __future__ import annotations


class KeywordJudge:
    """on_topic: the reply names the record's `expected` word (None where a record has none)."""

    metrics = ("on_topic",)

    def __init__(self, name: str):
        self.name = name

    def score(self, records: list[dict], replies: list[str]) -> list[dict]:
        return [{"on_topic": None if not r.get("expected") else r["expected"].lower() in reply.lower()}
                for r, reply in zip(records, replies)]


def keyword_judge(name: str = "keyword") -> KeywordJudge:
    return KeywordJudge(name)
