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
        "sft": {"prompt", "completion", "kind", "family"},
        "sft_one_family": {"prompt", "completion", "kind", "family"},
        "preference": {"prompt", "chosen", "rejected", "kind", "family"},
        "aligner": {"question", "answer", "correction", "kind", "family"},
        "aligner_eval": {"question", "answer", "correction", "kind"},
        "eval_prompts": {"id", "prompt", "kind", "relation", "expected", "entity", "family", "family_split"},
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

    texts = [re.sub(r"Q: .*? A: ", "", t) for t in _pretrain_texts(small_splits)]  # questions state nothing
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


# ----- phrasing families ------------------------------------------------------------------------------
# Openers that only constructions of the default held-out families use.
HELDOUT_OPENERS = ("i want to", "i'd love to", "i'm trying to learn", "i am curious", "i need to", "as for ",
                   "the way to", "i'm planning to", "i'm going to")


def _alignment_prompts(splits):
    return ([r["prompt"] for r in splits["sft"] + splits["preference"]] + [r["question"] for r in splits["aligner"]])


def test_heldout_families_never_reach_alignment_data(small_world, small_splits):
    from lightalign.lab.phrasings import DEFAULT_HELDOUT_FAMILIES

    assert small_world.cfg.heldout_families == DEFAULT_HELDOUT_FAMILIES
    for name in ("sft", "preference", "aligner"):
        assert {r["family"] for r in small_splits[name]} == set(small_world.seen_families), name
    texts = [p.lower() for p in _alignment_prompts(small_splits)]
    leaks = [t for t in texts if any(o in t for o in HELDOUT_OPENERS)]
    assert not leaks, leaks[:3]


def test_the_base_meets_every_family_in_pretraining(small_splits):
    users = [r["messages"][0]["content"].lower() for r in small_splits["pretrain"] if "messages" in r]
    for opener in HELDOUT_OPENERS:
        assert any(opener in u for u in users), opener


def test_eval_prompts_are_tagged_seen_or_heldout(small_world, small_splits):
    rows = small_splits["eval_prompts"]
    by_split = {"seen": set(), "heldout": set()}
    for r in rows:
        by_split[r["family_split"]].add(r["family"])
    assert by_split["seen"] == set(small_world.seen_families)
    assert by_split["heldout"] == set(small_world.cfg.heldout_families)
    for split in by_split:  # every kind is asked in both splits, about the same held-out requests
        assert {r["kind"] for r in rows if r["family_split"] == split} == {"answerable", "format", "harmful",
                                                                             "unanswerable"}


def test_wordings_keep_names_and_numbers(small_world, small_splits):
    import re

    for r in small_splits["eval_prompts"]:
        entity = r["entity"]
        if r["relation"] in ("add", "convert"):
            numbers = re.findall(r"\d+", r["prompt"])
            assert [n for n in entity.split() if n.isdigit() and n in numbers], r
        else:
            assert entity in r["prompt"], r


def test_wordings_vary_within_a_family(small_world):
    import random

    from lightalign.lab.phrasings import FAMILIES, wording

    fact = small_world.facts()[0]
    rng = random.Random(0)
    for family in FAMILIES:
        texts = {wording("answerable", fact, family, rng, modifiers=False)[0] for _ in range(60)}
        assert len(texts) >= 4, (family, texts)


def test_one_family_data_matches_the_diverse_data_in_size(small_splits):
    from lightalign.lab.phrasings import ONE_FAMILY

    narrow, diverse = small_splits["sft_one_family"], small_splits["sft"]
    assert len(narrow) == len(diverse)
    assert {r["family"] for r in narrow} == {ONE_FAMILY}
    assert len({r["prompt"] for r in narrow}) < len({r["prompt"] for r in diverse})


def test_unknown_or_all_heldout_families_are_refused():
    import pytest

    from lightalign.config import from_dict
    from lightalign.errors import UserError
    from lightalign.lab.phrasings import FAMILIES

    with pytest.raises(UserError, match="heldout_families"):
        from_dict(WorldConfig, {"heldout_families": ["whispered"]})
    with pytest.raises(UserError, match="at least one family"):
        from_dict(WorldConfig, {"heldout_families": list(FAMILIES)})
