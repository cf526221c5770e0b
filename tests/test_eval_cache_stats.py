"""Generation cache (durable, resume-safe) and the statistics (bootstrap CI, w score)."""

from __future__ import annotations

import json
import random

from lightalign.evaluation.cache import GenerationCache, cache_key
from lightalign.evaluation.stats import bootstrap_ci, rate_ci, w_score


def test_cache_persists_and_keys_depend_on_every_part(tmp_path):
    k1 = cache_key(stage="generate", upstream={"base": "a"}, prompt="hi", settings={"max_new_tokens": 8})
    assert k1 == cache_key(settings={"max_new_tokens": 8}, prompt="hi", upstream={"base": "a"}, stage="generate")
    assert k1 != cache_key(stage="generate", upstream={"base": "a"}, prompt="hi", settings={"max_new_tokens": 9})
    assert k1 != cache_key(stage="generate", upstream={"base": "b"}, prompt="hi", settings={"max_new_tokens": 8})
    with GenerationCache(tmp_path / "c.jsonl") as c:
        c.put(k1, "hello")
        c.put_many([("k2", {"text": "x", "changed": True}), ("k3", "three")])
    with GenerationCache(tmp_path / "c.jsonl") as c:
        assert c.get(k1) == "hello" and c.get("k2") == {"text": "x", "changed": True} and "k3" in c
        assert "k4" not in c


def test_torn_last_line_is_cut_and_appends_continue(tmp_path):
    path = tmp_path / "c.jsonl"
    with GenerationCache(path) as c:
        c.put_many([(f"k{i}", f"v{i}") for i in range(3)])
    with path.open("a") as f:
        f.write('{"key": "k3", "val')  # a crash mid-write
    with GenerationCache(path) as c:
        assert sorted(c.values) == ["k0", "k1", "k2"] and c.torn_lines == 1
        c.put("k4", "v4")
    lines = path.read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == ["k0", "k1", "k2", "k4"]
    # a complete last record that only lost its newline is kept
    path.write_text(path.read_text().rstrip("\n"))
    with GenerationCache(path) as c:
        c.put("k5", "v5")
    with GenerationCache(path) as c:
        assert sorted(c.values) == ["k0", "k1", "k2", "k4", "k5"]


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_n():
    rng = random.Random(0)
    small = [rng.random() < 0.3 for _ in range(50)]
    big = [rng.random() < 0.3 for _ in range(2000)]
    a, b = rate_ci(small, n_boot=2000), rate_ci(big, n_boot=2000)
    assert a["lo"] <= a["mean"] <= a["hi"] and b["lo"] <= b["mean"] <= b["hi"]
    assert (b["hi"] - b["lo"]) < (a["hi"] - a["lo"]) / 3
    assert b["lo"] < 0.3 < b["hi"]
    assert rate_ci([True, None, False, None])["n"] == 2
    assert bootstrap_ci([])["mean"] is None
    assert bootstrap_ci([2.0, 4.0], n_boot=0) == {"mean": 3.0, "lo": 3.0, "hi": 3.0, "n": 2}


def test_bootstrap_coverage_is_about_95_percent():
    """Across many samples from a known rate, the 95% interval holds the true rate ~95% of the time."""
    rng = random.Random(1)
    hits = 0
    for t in range(200):
        flags = [rng.random() < 0.6 for _ in range(200)]
        c = rate_ci(flags, n_boot=400, seed=t)
        hits += c["lo"] <= 0.6 <= c["hi"]
    assert 0.88 <= hits / 200 <= 0.99


def test_w_score_matches_the_aligner_paper_formula():
    outcomes = ["win"] * 6 + ["loss"] * 2 + ["tie"] * 2 + [None] * 3
    w = w_score(outcomes, n_boot=500)
    assert (w["wins"], w["losses"], w["ties"]) == (6, 2, 2)
    assert w["w"] == (6 - 2) / (6 + 2 + 2) == w["mean"]
    assert w["lo"] <= w["w"] <= w["hi"] and w["n"] == 10
    assert w_score(["loss", "loss"])["w"] == -1.0 and w_score([None])["w"] is None
