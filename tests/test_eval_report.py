"""`lightalign eval CONFIG.yaml` and the mini-lab report end to end on tiny real models: report files,
numbers consistent with the judges, cached re-runs, clean errors."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from lightalign.cli import main
from lightalign.io import read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def lab(tmp_path_factory, app_lab, small_splits):
    """A lab folder: the shared tiny models (base, adapters/dpo, aligner) + every data split."""
    shared = app_lab
    root = tmp_path_factory.mktemp("eval_lab")
    for part in ("base", "adapters", "aligner", "data"):
        shutil.copytree(shared / part, root / part)
    for name in ("sft", "capability", "aligner_eval", "eval_prompts"):
        write_jsonl(root / "data" / f"{name}.jsonl", small_splits[name])
    for done in ("adapters/dpo", "aligner"):  # training's "finished" mark
        (root / done / "metrics.json").write_text("{}")
    return root


def write_config(path, lab, out, **extra):
    cfg = {
        "title": "tiny eval",
        "base": {"path": str(lab / "base")},
        "systems": [{"name": "base", "kind": "base"},
                    {"name": "dpo", "kind": "adapter", "adapter": str(lab / "adapters" / "dpo")},
                    {"name": "aligner", "kind": "aligner", "aligner": str(lab / "aligner")},
                    {"name": "urial", "kind": "urial"}],
        "dataset": {"schema": "prompt_only", "path": str(lab / "data" / "eval_prompts.jsonl"), "limit": 16,
                    "shuffle": True, "group_by": ["family_split"]},
        "judges": [{"kind": "python", "factory": "lightalign.lab.judges:eval_judge",
                    "options": {"world": str(lab / "data" / "world.json")}}, {"kind": "refusal"}],
        "generation": {"max_new_tokens": 12, "batch_size": 8},
        "tax": {"capability": str(lab / "data" / "capability.jsonl"), "max_docs": 12,
                "aligner_eval": str(lab / "data" / "aligner_eval.jsonl"), "max_triples": 12},
        "output": str(out), "bootstrap": 200, "progress": False, **extra}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_eval_cli_writes_a_consistent_report_and_reruns_from_cache(lab, tmp_path, monkeypatch):
    from matplotlib.image import imread

    from lightalign.lab.judges import Judge

    out = tmp_path / "out"
    cfg = write_config(tmp_path / "eval.yaml", lab, out)
    assert main(["eval", str(cfg), "dataset.limit=12"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["order"] == ["base", "dpo", "aligner", "urial"] and report["dataset"]["n"] == 12

    # every rate equals the lab judge applied to the saved replies
    rows = read_jsonl(out / "generations.jsonl")
    judge = Judge.from_file(lab / "data" / "world.json")
    prompts = {r["id"]: r for r in read_jsonl(lab / "data" / "eval_prompts.jsonl")}
    for name in report["order"]:
        summary = judge.summarize([prompts[r["id"]] for r in rows], [r["replies"][name]["text"] for r in rows])
        for m, got in report["systems"][name]["metrics"].items():
            if m in summary:
                assert got["mean"] == pytest.approx(summary[m]["rate"]) and got["n"] == summary[m]["n"]
                assert got["lo"] <= got["mean"] <= got["hi"]
        for split in ("seen", "heldout"):  # dataset.group_by: the same judge on each group's records
            part = [r for r in rows if prompts[r["id"]]["family_split"] == split]
            summary = judge.summarize([prompts[r["id"]] for r in part], [r["replies"][name]["text"] for r in part])
            by = report["systems"][name]["by_group"]["family_split"]
            for m in ("helpful", "harmless", "honest"):
                if summary[m]["n"]:
                    assert by[m][split]["mean"] == pytest.approx(summary[m]["rate"]) and by[m][split]["n"] == summary[m]["n"]
    assert "harmless (refusal)" in report["systems"]["base"]["metrics"]  # both judges kept, names disambiguated
    tax = report["tax"]
    assert set(tax) == {"base", "dpo"} and tax["dpo"]["delta"] == pytest.approx(tax["dpo"]["nll"] - tax["base"]["nll"])
    al = report["aligner_eval"]["aligner"]
    assert al["n"] == 12 and 0 <= al["do_no_harm"] <= 1
    assert 0 <= report["systems"]["aligner"]["aligner_edits"]["edit_rate"]["mean"] <= 1
    gains = report["systems"]["dpo"]["gains"]  # paired differences vs the base
    assert report["baseline"] == "base" and "gains" not in report["systems"]["base"]
    for m, g in gains.items():
        a, b = report["systems"]["dpo"]["metrics"][m], report["systems"]["base"]["metrics"][m]
        assert g["mean"] == pytest.approx(a["mean"] - b["mean"]) and g["lo"] <= g["mean"] <= g["hi"]
    assert [r["system"] for r in report["table"]] == report["order"]

    md = (out / "report.md").read_text()
    assert "## By family_split" in md and "helpful: heldout" in md
    assert "| **dpo** | adapter |" in md and "## Alignment tax" in md and "## Aligner on held-out answers" in md
    for png in report["figures"]:
        img = imread(out / png)
        assert img.shape[0] > 300 and img.shape[1] > 300 and img.std() > 0.01  # a drawn, non-blank figure
    assert {"rates.png", "profile.png", "costs.png"} <= set(report["figures"])

    # a re-run generates nothing (no model is even loaded): same replies, same numbers, same cache file
    from lightalign.evaluation import systems

    def boom(*a, **k):
        raise AssertionError("a model was loaded on a fully cached re-run")

    monkeypatch.setattr(systems, "load_base_model", boom)
    monkeypatch.setattr(systems, "load_aligner", boom)
    size = (out / "cache.jsonl").stat().st_size
    assert main(["eval", str(cfg), "dataset.limit=12"]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["tax"] == report["tax"] and again["systems"] == report["systems"]
    assert (out / "cache.jsonl").stat().st_size == size
    assert read_jsonl(out / "generations.jsonl") == rows


def test_eval_cli_errors_are_one_line(lab, tmp_path, capsys):
    cfg = write_config(tmp_path / "eval.yaml", lab, tmp_path / "out")
    assert main(["eval", str(cfg), "generation.max_new_tokns=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'generation.max_new_tokens'" in err and err.count("\n") == 1
    assert main(["eval", str(cfg), "dataset.path=" + str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err
    assert main(["eval", str(cfg), "dataset.group_by=[colour]"]) == 2
    assert "dataset.group_by: no record of" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.yaml")]) == 2
    capsys.readouterr()
    bad = write_config(tmp_path / "bad.yaml", lab, tmp_path / "out2",
                       systems=[{"name": "dpo", "kind": "adapter", "adapter": str(tmp_path / "no_adapter")}])
    assert main(["eval", str(bad)]) == 2
    assert "no_adapter: adapter folder does not exist" in capsys.readouterr().err


def test_lab_report_compares_every_system_found_in_the_lab(lab, tmp_path):
    from lightalign.lab.report import run_lab_report

    root = tmp_path / "lab"
    shutil.copytree(lab, root)
    (root / "adapters" / "dpo" / "metrics.json").unlink()  # an adapter still training is not evaluated
    logs = []
    report = run_lab_report(root, quick=True, log=logs.append)
    assert report["order"] == ["base", "base+aligner", "urial"]
    assert report["tax"] == {"base": report["tax"]["base"]}
    (root / "adapters" / "dpo" / "metrics.json").write_text("{}")
    report = run_lab_report(root, quick=True, log=logs.append)
    assert report["order"] == ["base", "base+dpo", "base+aligner", "base+dpo+aligner", "urial"]
    for f in ("report.json", "report.md", "rates.png", "costs.png"):
        assert (root / "report" / f).exists()
    assert {"helpful", "harmless", "honest"} <= set(report["table"][0])
    assert report["table"][1]["nll_tax"] == pytest.approx(report["tax"]["base+dpo"]["relative"])
    # seen vs held-out phrasing families, as `lightalign lab` prints them, and the robustness measure
    from lightalign.lab.cli import family_split_rows

    rows = family_split_rows(report)
    by = report["systems"]["base+dpo"]["by_group"]["family_split"]
    assert [r["system"] for r in rows] == report["order"]
    assert rows[1]["helpful: heldout"] == by["helpful"]["heldout"]["mean"]
    rb = report["robustness"]
    assert rb["prompts"] == 40 and set(rb["systems"]) == set(report["order"])
    assert (root / "report" / "rewordings.jsonl").exists()
    # URIAL's examples come from the training split only
    examples = read_jsonl(root / "report" / "urial_examples.jsonl")
    sft_prompts = {r["prompt"] for r in read_jsonl(root / "data" / "sft.jsonl")}
    assert len(examples) == 3 and all(e["prompt"] in sft_prompts for e in examples)
    # the deprecated `eval --lab DIR` reruns the config the lab wrote (from the cache)
    assert main(["eval", "--lab", str(root)]) == 0
    assert json.loads((root / "report" / "report.json").read_text())["systems"] == report["systems"]


def test_every_eval_recipe_is_a_valid_config():
    from pathlib import Path

    import lightalign.recipes as recipes
    from lightalign.config import load_config
    from lightalign.evaluation.config import EvalConfig
    from lightalign.training.recipe import resolve_recipe

    paths = sorted((Path(recipes.__file__).parent / "eval").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        cfg = load_config(EvalConfig, path)
        assert cfg.systems and cfg.judges, path
    assert resolve_recipe("eval/minilab").name == "minilab.yaml"
