"""The page's example prompts and the judge plugin's verdicts (no model loads)."""

import pytest

from lightalign.app.config import AppConfig
from lightalign.app.examples import Examples
from lightalign.errors import UserError
from lightalign.io import write_json, write_jsonl


@pytest.fixture(scope="module")
def lab_files(tmp_path_factory, small_splits, small_world):
    from lightalign.lab.splits import world_summary

    root = tmp_path_factory.mktemp("examples")
    write_jsonl(root / "eval_prompts.jsonl", small_splits["eval_prompts"])
    write_json(root / "world.json", world_summary(small_world))
    return root


@pytest.fixture(scope="module")
def examples(lab_files):
    return Examples.from_config(AppConfig(examples=str(lab_files / "eval_prompts.jsonl"),
                                          judge="lightalign.lab.judges:eval_judge",
                                          judge_options={"world": str(lab_files / "world.json")}))


def test_a_few_examples_per_kind_in_file_order(examples, small_splits):
    groups = examples.groups(3)
    kinds = list(dict.fromkeys(r["kind"] for r in small_splits["eval_prompts"]))
    assert list(groups) == [k.capitalize() for k in kinds]
    for kind in kinds:
        prompts = [r["prompt"] for r in small_splits["eval_prompts"] if r["kind"] == kind]
        shown = groups[kind.capitalize()]
        assert len(shown) == min(3, len(prompts)) and set(shown) <= set(prompts)
        if len(prompts) >= 6:  # spread across the kind, not its first three rows
            assert shown != prompts[:3]
    assert examples.groups(0) == {}
    plain = Examples([{"prompt": "a"}, {"prompt": "b", "kind": "how_to"}])
    assert plain.groups(2) == {"Examples": ["a"], "How to": ["b"]}


def test_verdicts_only_for_prompts_that_match_an_example(examples, small_splits):
    rec = next(r for r in small_splits["eval_prompts"] if r["kind"] == "unanswerable")
    typed = "  " + rec["prompt"].upper().replace(" ", "   ") + "\n"  # case and spacing do not matter
    assert examples.verdicts(typed, "I do not know.") == "Judges: **honest** ✓ yes"
    assert examples.verdicts(rec["prompt"], "It is Ulmbel, of course.") == "Judges: **honest** ✗ no"
    assert examples.verdicts(rec["prompt"], "") == ""  # nothing to judge yet
    assert examples.verdicts("Hello there", "Hi!").startswith("*No judge for this prompt")
    harmful = next(r for r in small_splits["eval_prompts"] if r["kind"] == "harmful")
    assert examples.verdicts(harmful["prompt"], "I cannot help with that.") == "Judges: **harmless** ✓ yes"
    assert "judge lab (helpful, harmless, honest)" in examples.describe()


def test_no_judge_means_no_verdict_line_and_a_failing_judge_costs_only_its_line(examples):
    rec = examples.records[0]
    assert Examples(examples.records).verdicts(rec["prompt"], "anything") == ""

    class Broken:
        name, metrics = "broken", ("ok",)

        def score(self, records, replies):
            raise RuntimeError("judge service down")

    line = Examples(examples.records, Broken()).verdicts(rec["prompt"], "anything")
    assert line == "*The judge failed: RuntimeError: judge service down*"


def test_bad_examples_files_name_the_file_and_line(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(UserError, match=r"ex.jsonl:2: field 'prompt' must be a string"):
        Examples.from_config(AppConfig(examples=str(path)))
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"ex.jsonl(:1)?: not UTF-8"):
        Examples.from_config(AppConfig(examples=str(path)))
    with pytest.raises(UserError, match=r"is a directory"):
        Examples.from_config(AppConfig(examples=str(tmp_path)))
    with pytest.raises(UserError, match=r"nope.jsonl: file not found"):
        Examples.from_config(AppConfig(examples=str(tmp_path / "nope.jsonl")))
    listed = tmp_path / "ex.json"
    listed.write_text('[{"prompt": "one", "kind": "a"}, {"prompt": "two", "kind": "a"}]')
    assert Examples.from_config(AppConfig(examples=str(listed))).groups(5) == {"A": ["one", "two"]}


def test_examples_grouped_by_another_field_with_titles(tmp_path):
    rows = [{"prompt": "p1", "kind": "harmful", "set": "harmbench"}, {"prompt": "p2", "kind": "safe", "set": "edgy"},
            {"prompt": "p3", "kind": "safe", "set": "benign"}, {"prompt": "p4", "kind": "safe"}]
    assert Examples(rows).groups(3) == {"Harmful": ["p1"], "Safe": ["p2", "p3", "p4"]}  # by kind, as before
    by_set = Examples(rows, group_by="set", titles={"harmbench": "HarmBench"})
    assert by_set.groups(3) == {"HarmBench": ["p1"], "Edgy": ["p2"], "Benign": ["p3"], "Examples": ["p4"]}
    path = tmp_path / "ex.yaml"
    path.write_text("examples_group_by: set\nexamples_titles: {edgy: ''}\n")
    from lightalign.config import load_config

    with pytest.raises(UserError, match=r"ex.yaml.*examples_titles.*'edgy' must be non-empty"):
        load_config(AppConfig, path)


def test_the_real_tracks_app_config_offers_harmbench_edgy_and_benign_examples(tmp_path):
    from lightalign.lab.real.track import app_config

    rows = [{"prompt": f"{s} {i}", "kind": "harmful" if s == "harmbench" else "safe", "set": s, "source": s}
            for s in ("harmbench", "edgy", "benign") for i in range(5)]
    write_jsonl(tmp_path / "data" / "eval_prompts.jsonl", rows)
    cfg = AppConfig(**app_config(tmp_path))
    cfg.validate()
    groups = Examples.from_config(cfg).groups(cfg.examples_per_kind)
    assert list(groups) == ["HarmBench", "Edgy but benign", "Benign"]
    assert all(p.startswith("edgy") for p in groups["Edgy but benign"])
