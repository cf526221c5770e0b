"""Rule-based rewordings (evaluation.rewrites): each built-in rule keeps names, numbers and a trailing
instruction, handles any text, is deterministic; user rules from templates, regexes and factories;
bad specs name the field."""

from __future__ import annotations

import random

import pytest

from lightalign.errors import UserError
from lightalign.evaluation.rewrites import RULES, Rewording, build_rewriters, embedded, reword


def by_rule(prompt, seed=0, specs=None):
    return {r.rule: r.text for r in reword(prompt, build_rewriters(specs), seed)}


@pytest.mark.parametrize("question, clause", [
    ("What is the capital of Velmora?", "what the capital of Velmora is"),
    ("Where does Alice Brown live?", "where Alice Brown lives"),
    ("In which town does Tomas live?", "in which town Tomas lives"),
    ("What does Mira do for a living?", "what Mira does for a living"),
    ("How do I pick a lock?", "how to pick a lock"),
    ("How can I bake bread?", "how to bake bread"),
    ("How many legs does a spider have?", "how many legs a spider has"),
    ("What did Napoleon eat for breakfast?", "what Napoleon ate for breakfast"),
    ("What will Ivo do tomorrow?", "what Ivo will do tomorrow"),
    ("What is Ivo going to do tomorrow?", "what Ivo is going to do tomorrow"),
    ("Why is the sky blue?", "why the sky is blue"),
    ("How much is 12 plus 7?", "how much 12 plus 7 is"),
    ("How many minutes are in 3 hours?", "how many minutes are in 3 hours"),
    ("Who is coming to dinner?", "who is coming to dinner"),
    ("Is Paris the capital of France?", "whether Paris is the capital of France"),
    ("Does the sun rise in the east?", "whether the sun rises in the east"),
    ("When did Rome fall?", "when Rome fell"),
    ("Who wrote Hamlet?", "who wrote Hamlet"),
    ("What time it is?", None),  # not parsed: the rules fall back to a wrapper
    ("Tell me a joke.", None),
])
def test_questions_become_embedded_clauses(question, clause):
    assert embedded(question) == clause


def test_rules_rewrite_the_question_and_keep_names_numbers_and_the_instruction():
    prompt = "What is the capital of Velmora? Answer in one word."
    got = by_rule(prompt)
    assert set(got) == set(RULES)  # every built-in rule applies to a plain wh-question
    assert got["imperative"] == "Tell me what the capital of Velmora is. Answer in one word."
    assert got["first_person"].startswith(("I need to find out what the capital of Velmora is.",
                                           "I'm trying to figure out what the capital of Velmora is."))
    assert got["lowercase"] == "what is the capital of velmora? Answer in one word."
    for rule, text in got.items():
        assert text != prompt and text.endswith("Answer in one word.") or rule == "greeting", (rule, text)
        if rule != "lowercase":
            assert "Velmora" in text, (rule, text)
    # the typo swaps two adjacent letters of one lowercase word, never the name nor the instruction
    typo = got["typo"]
    assert typo.endswith("? Answer in one word.") and "Velmora" in typo
    a, b = prompt.split(), typo.split()
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and len(diff) == 1
    x, y = diff[0]
    assert x.islower() and sorted(x) == sorted(y) and sum(c != d for c, d in zip(x, y)) == 2

    how = by_rule("How do I pick a lock?")
    assert how["indirect"] == "I want to know how to pick a lock."
    assert how["imperative"] == "Explain how to pick a lock."
    where = by_rule("Where does Alice Brown live?")
    assert where["first_person"].endswith("where Alice Brown lives.") and "typo" not in where  # no lowercase word >= 5
    nums = by_rule("How much is 12 plus 7?")
    assert all("12 plus 7" in t for t in nums.values())


def test_requests_and_multi_sentence_prompts():
    req = by_rule("Can you explain photosynthesis?")
    assert req["imperative"] == "Explain photosynthesis."
    assert req["indirect"] == "I'd like you to explain photosynthesis."
    poem = by_rule("Write a poem about Oslo.")
    assert poem["polite"] in ("Please write a poem about Oslo.", "Could you please write a poem about Oslo?")
    assert "imperative" not in poem  # already an imperative: the rule does not apply
    trip = by_rule("I'm planning a trip. What is the best time to visit Japan?")
    assert trip["imperative"] == "I'm planning a trip. Tell me what the best time to visit Japan is."


@pytest.mark.parametrize("text", ["", "   ", "?", "hello", "Ünïcödé ñame? ok", "a. b. c?", "42", "Ǆ!? ..",
                                  "What?", "Is?", "How do I?", "Does Alice?", "x" * 2000])
def test_every_rule_handles_arbitrary_text(text):
    for name, rule in RULES.items():
        out = rule(text, random.Random(0))
        assert out is None or isinstance(out, str), name
    for r in reword(text, build_rewriters()):
        assert r.text.strip() and r.text != text.strip()


def test_reword_is_deterministic_drops_duplicates_and_depends_on_the_seed():
    rewriters = build_rewriters()
    prompt = "Which town is the capital of Orlan? Answer in one word."
    first = reword(prompt, rewriters, seed=3)
    assert first == reword(prompt, rewriters, seed=3)
    assert all(isinstance(r, Rewording) for r in first)
    texts = [r.text for r in first]
    assert len(set(texts)) == len(texts) and prompt not in texts
    seeds = {tuple(r.text for r in reword(prompt, rewriters, seed=s)) for s in range(8)}
    assert len(seeds) > 1  # the variants (greeting, typo position, ...) are drawn from the seed
    # a rule's result does not depend on which other rules run
    alone = reword(prompt, build_rewriters(["typo"]), seed=3)
    assert alone == [r for r in first if r.rule == "typo"]
    # two rules giving the same text: the later one is dropped
    same = build_rewriters([{"name": "a", "template": "Hey, {prompt}"}, {"name": "b", "template": "Hey, {prompt}"}])
    assert [r.rule for r in reword("Hi?", same)] == ["a"]


def upper_factory(suffix="!"):
    """A user rule: shout the prompt (used via 'tests.test_eval_rewrites:upper_factory' style specs)."""
    return lambda prompt, rng: prompt.upper() + suffix if prompt else None


def test_user_templates_regexes_and_factories():
    specs = ["polite", {"name": "hey", "template": "Hey, {prompt}"},
             {"name": "capital", "pattern": r"\bcapital\b", "replace": "capital city"},
             {"name": "shout", "factory": "test_eval_rewrites:upper_factory", "options": {"suffix": "!!"}}]
    rw = build_rewriters(specs)
    assert [r.name for r in rw] == ["polite", "hey", "capital", "shout"]
    got = {r.rule: r.text for r in reword("What is the capital of Velmora?", rw)}
    assert got["hey"] == "Hey, What is the capital of Velmora?"
    assert got["capital"] == "What is the capital city of Velmora?"
    assert got["shout"] == "WHAT IS THE CAPITAL OF VELMORA?!!"
    # a pattern that does not match: the rule does not apply
    assert "capital" not in {r.rule for r in reword("Where does Alice live?", rw)}


@pytest.mark.parametrize("specs, message", [
    (["polite", "nope"], r"robustness.rewrites\[1\]: unknown rule 'nope'"),
    ([{"template": "Hey {prompt}"}], r"robustness.rewrites\[0\].name is required"),
    ([{"name": "x", "template": "Hey"}], r"robustness.rewrites\[0\].template must be a string containing \{prompt\}"),
    ([{"name": "x", "pattern": "(", "replace": "y"}], r"robustness.rewrites\[0\].pattern: not a valid regular"),
    ([{"name": "x", "pattern": "a"}], r"robustness.rewrites\[0\].pattern and .*replace must both be strings"),
    ([{"name": "x", "template": "{prompt}", "pattern": "a"}], r"robustness.rewrites\[0\]: give exactly one of"),
    ([{"name": "x", "template": "{prompt}", "colour": 1}],
     r"robustness.rewrites\[0\]: unknown field\(s\) \['colour'\]"),
    (["typo", "typo"], r"robustness.rewrites\[1\].name: duplicate rule name 'typo'"),
    ([3], r"robustness.rewrites\[0\]: a rule name or a dict"),
    ([], r"robustness.rewrites must be a non-empty list"),
    ([{"name": "x", "factory": "no_such_module_xyz:f"}], r"robustness.rewrites\[0\].factory: cannot import"),
    ([{"name": "x", "factory": "test_eval_rewrites:upper_factory", "options": {"bad": 1}}],
     r"robustness.rewrites\[0\].factory: .* does not accept options \['bad'\]"),
    ([{"name": "x", "factory": "test_eval_rewrites:RULES"}], r"robustness.rewrites\[0\].factory: .* is not callable"),
])
def test_bad_specs_name_the_item_and_field(specs, message):
    with pytest.raises(UserError, match=message):
        build_rewriters(specs)


def test_bad_specs_fail_in_the_eval_config_before_any_model_loads():
    from lightalign.config import from_dict
    from lightalign.evaluation.config import EvalConfig

    base = {"base": {"path": "x"}, "systems": [{"name": "b", "kind": "base"}], "dataset": {"path": "p.jsonl"},
            "judges": [{"kind": "refusal"}]}
    assert from_dict(EvalConfig, base).robustness is None  # absent: off
    cfg = from_dict(EvalConfig, {**base, "robustness": {"rewrites": ["typo"], "max_prompts": 5}})
    assert cfg.robustness.per_prompt == 4 and cfg.robustness.endpoint_rewrites == 2
    for bad, message in [({"rewrites": ["nope"]}, r"robustness.rewrites\[0\]: unknown rule"),
                         ({"per_prompt": 0}, "robustness.per_prompt must be >= 1"),
                         ({"max_prompts": 0}, "robustness.max_prompts must be >= 1"),
                         ({"endpoint": {"url": "ftp://x", "model": "m"}}, "robustness.endpoint.url must start"),
                         ({"endpoint": {"url": "http://x/v1"}}, "robustness.endpoint.model is required"),
                         ({"per_promt": 2}, "did you mean 'robustness.per_prompt'")]:
        with pytest.raises(UserError, match=message):
            from_dict(EvalConfig, {**base, "robustness": bad})
    with pytest.raises(UserError, match="robustness: the rewordings are judged by the rule judges only"):
        from_dict(EvalConfig, {**base, "robustness": {}, "judges": [{"kind": "reward", "path": "rm"}]})
