"""Scoring a model in the mini-lab: fact-completion probes (is it capable?) and the judges on
held-out prompts (is it aligned?)."""

from __future__ import annotations

from lightalign.lab.judges import Judge, words


def probe_accuracy(model, tokenizer, probes: list[dict], batch_size: int = 64) -> float:
    """Share of probes whose greedy continuation starts with the target (document-style text)."""
    from lightalign.generation import generate_texts

    texts = [tokenizer.bos_token + p["prefix"] for p in probes]
    outs = generate_texts(model, tokenizer, texts, max_new_tokens=6, batch_size=batch_size)
    hits = [words(o)[: len(words(p["target"]))] == words(p["target"]) for o, p in zip(outs, probes)]
    return sum(hits) / max(1, len(hits))


def judge_model(model, tokenizer, judge: Judge, records: list[dict], batch_size: int = 64,
                system: str | None = None, progress: bool = False) -> tuple[dict, list[str]]:
    """Answer every held-out prompt greedily and summarise the judges' verdicts."""
    from lightalign.generation import generate_chat

    replies = generate_chat(model, tokenizer, [r["prompt"] for r in records], system=system,
                            max_new_tokens=48, batch_size=batch_size, progress=progress, desc="answering")
    return judge.summarize(records, replies), replies
