"""The mini-lab generator: deterministic, well-formed, and shaped as the judges expect."""

import hashlib
import json

from lightalign.io import read_jsonl
from lightalign.lab.judges import Judge
from lightalign.lab.pipeline import LabConfig, build_world
from lightalign.lab.splits import build_splits, world_summary
from lightalign.lab.world import HARM_MARKERS, World, WorldConfig


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.json*"))}


def test_same_seed_same_files(tmp_path):
    cfg = LabConfig.small()
    a = build_world(cfg, tmp_path / "a", log=lambda *_: None)
    b = build_world(cfg, tmp_path / "b", log=lambda *_: None)
    assert _digest(a) == _digest(b)
    cfg.world.seed += 1
    c = build_world(cfg, tmp_path / "c", log=lambda *_: None)
    assert _digest(c)["pretrain.jsonl"] != _digest(a)["pretrain.jsonl"]


def test_world_cache_is_keyed_on_config(tmp_path):
    cfg = LabConfig.small()
    logs = []
    build_world(cfg, tmp_path, log=logs.append)
    build_world(cfg, tmp_path, log=logs.append)
    assert "cached" in logs[-1]
    cfg.world.docs_per_fact += 1
    build_world(cfg, tmp_path, log=logs.append)
    assert "cached" not in logs[-1]


def test_every_split_parses_with_its_fields(tmp_path):
    data = build_world(LabConfig.small(), tmp_path, log=lambda *_: None)
    fields = {
        "sft": {"prompt", "completion", "kind"},
        "preference": {"prompt", "chosen", "rejected", "kind"},
        "aligner": {"question", "answer", "correction", "kind"},
        "aligner_eval": {"question", "answer", "correction", "kind"},
        "eval_prompts": {"id", "prompt", "kind", "relation", "expected", "entity"},
        "capability": {"text"},
        "probes": {"prefix", "target", "relation", "heldout"},
    }
    for name, need in fields.items():
        rows = read_jsonl(data / f"{name}.jsonl")
        assert rows, name
        assert all(need <= set(r) for r in rows), name
    pre = read_jsonl(data / "pretrain.jsonl")
    assert any("text" in r for r in pre) and any("messages" in r for r in pre)
    assert json.loads((data / "world.json").read_text())["towns"]


def test_heldout_entities_never_reach_alignment_data(small_world, small_splits):
    held_prompts = {r["prompt"] for r in small_splits["eval_prompts"]}
    train_prompts = {r["prompt"] for r in small_splits["sft"]} | {r["question"] for r in small_splits["aligner"]}
    assert held_prompts and not (held_prompts & train_prompts)
    key = lambda e: e if isinstance(e, str) else " ".join(map(str, e))  # noqa: E731
    heldout = {key(e) for e in small_world.heldout}
    assert all(r["entity"] in heldout for r in small_splits["eval_prompts"])


def test_eval_covers_every_kind(small_splits):
    kinds = {r["kind"] for r in small_splits["eval_prompts"]}
    assert kinds == {"answerable", "format", "harmful", "unanswerable"}


def test_aligner_triples_include_unchanged_good_answers(small_splits):
    rows = small_splits["aligner"]
    same = sum(r["answer"] == r["correction"] for r in rows)
    assert 0.1 < same / len(rows) < 0.35


def test_pretraining_dialogues_are_mixed_quality(small_world, small_splits):
    """The base must see both refusals and compliance, abstentions and hallucinations."""
    replies = [r["messages"][1]["content"] for r in small_splits["pretrain"] if "messages" in r]
    complied = sum(any(m in x.lower() for m in HARM_MARKERS) for x in replies)
    refused = sum(x.startswith("I can not help") for x in replies)
    abstained = sum(x.startswith("I do not know") for x in replies)
    assert complied > 0 and refused > 0 and abstained > 0


def test_judges_pass_every_good_reply_and_fail_every_bad_one(small_world, small_splits):
    judge = Judge(world_summary(small_world))
    records = {r["prompt"]: r for r in small_splits["eval_prompts"]}
    for row in small_splits["aligner_eval"]:
        verdict = judge.score(records[row["question"]], row["answer"])
        applied = [v for v in verdict.values() if v is not None]
        assert len(applied) == 1
        assert applied[0] == (row["answer"] == row["correction"]), (row, verdict)


def test_generator_rejects_bad_config():
    import pytest

    from lightalign.config import from_dict
    from lightalign.errors import UserError

    with pytest.raises(UserError, match="heldout_fraction"):
        from_dict(WorldConfig, {"heldout_fraction": 1.5})


def test_world_is_fictional_and_seeded():
    a, b = World(WorldConfig(seed=1)), World(WorldConfig(seed=1))
    assert a.capital == b.capital and a.home == b.home
    assert World(WorldConfig(seed=2)).capital != a.capital
    assert len(set(a.capital.values())) == len(a.lands)  # one capital per land
    assert build_splits(a)["eval_prompts"] == build_splits(b)["eval_prompts"]


def _pretrain_texts(splits):
    for row in splits["pretrain"]:
        if "text" in row:
            yield row["text"]
        else:
            yield from (m["content"] for m in row["messages"] if m["role"] == "assistant")


def test_pretraining_states_no_false_fact(small_world, small_splits):
    """The base must *know* every fact: misbehaving replies answer another question, ramble or refuse,
    but never give an entity a value other than its own."""
    import re

    texts = list(_pretrain_texts(small_splits))
    checked = 0
    for fact in small_world.facts():
        prefix = small_world.fact_sentence(fact).rsplit(fact["value"], 1)[0].rstrip()
        pattern = re.compile(r"(?<![\w])" + re.escape(prefix) + r" (\w+)")
        for text in texts:
            for value in pattern.findall(text):
                assert value == fact["value"].split()[0], (prefix, value, text)
                checked += 1
    assert checked > 10 * len(small_world.facts())  # every fact is stated, many times


def test_documents_state_each_fact_in_several_forms(small_world, small_splits):
    from lightalign.lab.world import PARAPHRASES

    docs = " ".join(r["text"] for r in small_splits["pretrain"] if "text" in r)
    fact = next(f for f in small_world.facts() if f["relation"] == "add")
    for form in [small_world.fact_sentence(fact)] + [t.format(value=fact["value"], **fact["slots"])
                                                     for t in PARAPHRASES["add"]]:
        assert form in docs, form


def test_wrong_style_answers_another_question_truthfully(small_world):
    import random

    rng = random.Random(0)
    for fact in small_world.facts():
        reply = small_world.answer(fact, "wrong", rng)
        assert fact["value"] not in reply.split(" ")[-1]
        assert reply in {small_world.fact_sentence(f) for f in small_world.facts()}
