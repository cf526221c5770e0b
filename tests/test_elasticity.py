"""`lightalign elasticity`: config errors (one line, exit 2, naming the field), the half-gain figure, and
one tiny end-to-end run on the session's tiny lab (an adapter trained further, a whole model trained
further, both behind the Aligner): points saved at each size of one run, scored by the eval, cached."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from lightalign.cli import main
from lightalign.evaluation.elasticity import rows_to_lose_half
from lightalign.io import read_jsonl, write_jsonl

LAB_JUDGE = "lightalign.lab.judges:eval_judge"


# ---------------------------------------------------------------- the half-gain figure

def test_half_gain_is_interpolated_between_the_points_around_it():
    # aligned 0.9, base 0.1: half the gain is lost at 0.5, between 10 rows (0.7) and 30 rows (0.3)
    h = rows_to_lose_half([(0, 0.9), (10, 0.7), (30, 0.3), (100, 0.1)], base=0.1)
    assert h["status"] == "lost" and h["threshold"] == pytest.approx(0.5)
    assert h["rows"] == pytest.approx(20.0)
    assert h["gain"] == pytest.approx(0.8)


def test_half_gain_follows_the_direction_of_the_gain():
    # over-refusal style: alignment lowered the rate (0.6 -> 0.2); it climbs back to 0.4 at 30 rows
    h = rows_to_lose_half([(0, 0.2), (10, 0.3), (30, 0.4), (100, 0.5)], base=0.6)
    assert h["status"] == "lost" and h["rows"] == pytest.approx(30.0)


def test_half_gain_kept_and_no_gain():
    assert rows_to_lose_half([(0, 0.9), (10, 0.85), (30, 0.8)], base=0.1) == \
        {"gain": pytest.approx(0.8), "threshold": pytest.approx(0.5), "rows": None, "status": "kept"}
    assert rows_to_lose_half([(0, 0.3), (10, 0.1)], base=0.3)["status"] == "no gain"
    assert rows_to_lose_half([(10, 0.3)], base=0.1)["status"] == "no gain"  # no aligned point
    # a point judged on nothing (None) is skipped, not read as zero
    assert rows_to_lose_half([(0, 1.0), (10, None), (30, 0.0)], base=0.0)["rows"] == pytest.approx(15.0)


# ---------------------------------------------------------------- config errors

def _config(tmp_path, **changes) -> dict:
    (tmp_path / "adapter").mkdir(exist_ok=True)
    data = {"base": str(tmp_path / "base"),
            "systems": [{"name": "lora", "adapter": str(tmp_path / "adapter")}],
            "reverse": {"kind": "benign", "path": str(tmp_path / "rows.jsonl")},
            "eval": {"dataset": {"path": str(tmp_path / "prompts.jsonl")}, "judges": [{"kind": "refusal"}]},
            "sizes": [10, 30], "output": str(tmp_path / "out")}
    data.update(changes)
    return data


def _run(tmp_path, capsys, data: dict, *overrides: str) -> tuple[int, str]:
    path = tmp_path / "elasticity.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code = main(["elasticity", str(path), *overrides])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("change, overrides, needle", [
    ({"sizes": [30, 10]}, [], "sizes must increase strictly"),
    ({"sizes": [0, 10]}, [], "sizes must be >= 1"),
    ({}, ["sizes=[]"], "sizes must list at least one"),
    ({"systems": [{"name": "x", "adapter": "a", "model": "m"}]}, [], "systems[0] (x): set exactly one of 'adapter'"),
    ({"systems": [{"name": "x", "adapter": "a", "finetune": "full"}]}, [], "finetune 'full' is for a 'model'"),
    ({"systems": [{"name": "a/b", "model": "m"}]}, [], "systems[0].name"),
    ({"systems": []}, [], "'systems' must list at least one"),
    ({}, ["reverse.kind=evil"], "field 'reverse.kind' must be one of 'benign', 'harmful', 'file'"),
    ({}, ["reverse.path="], "reverse.path is required"),
    ({}, ["eval.judges=[]"], "eval.judges must list at least one judge"),
    ({}, ["eval.bootstrap=-1"], "eval.bootstrap must be >= 0"),
    ({}, ["size=[1]"], "unknown key 'size' (did you mean 'sizes'?)"),
])
def test_bad_config_is_one_line_naming_the_field(tmp_path, capsys, change, overrides, needle):
    code, err = _run(tmp_path, capsys, _config(tmp_path, **change), *overrides)
    assert code == 2
    assert needle in err and err.startswith("lightalign elasticity: error: ") and "\n" not in err, err


def test_sizes_must_be_whole_training_batches_before_anything_loads(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, _config(tmp_path, sizes=[10, 25]),
                     "recipe_overrides=[training.batch_size=10]")
    assert code == 2 and "sizes: 25 is not a multiple of the training batch (10 x grad_accum 1" in err, err
    assert not (tmp_path / "out" / "reverse").exists()  # refused before the reverse set was built


def test_missing_aligned_folder_and_non_sft_recipe_are_named(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, _config(tmp_path, systems=[{"name": "full", "model": str(tmp_path / "nope")}]))
    assert code == 2 and f"systems[0].model: {tmp_path / 'nope'}: no such folder" in err, err
    code, err = _run(tmp_path, capsys, _config(tmp_path, recipe="minilab/dpo"))
    assert code == 2 and "recipe: minilab/dpo is a 'dpo' recipe" in err, err


def test_an_adapter_of_another_base_is_refused(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "other").mkdir()
    data = _config(tmp_path)
    named = {"base_model_name_or_path": str(tmp_path / "other")}
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(named))
    code, err = _run(tmp_path, capsys, data)
    assert code == 2, err
    assert f"systems[0].adapter: {tmp_path / 'adapter'} was trained on {tmp_path / 'other'}, not on base" in err, err


# ---------------------------------------------------------------- a tiny end-to-end run

BATCH = 2
SIZES = [2, 6]


@pytest.fixture(scope="module")
def run(app_lab, small_splits, tmp_path_factory):
    """Two runs of one config on the tiny lab: the first trains and scores, the second must reuse it all."""
    from lightalign.config import from_dict
    from lightalign.evaluation.elasticity import ElasticityConfig, run_elasticity

    tmp = tmp_path_factory.mktemp("elasticity")
    prompts = [{"prompt": r["prompt"]} for r in small_splits["sft"] if r["kind"] == "answerable"][:24]
    write_jsonl(tmp / "benign.jsonl", prompts)
    write_jsonl(tmp / "capability.jsonl", [{"text": r["text"]} for r in small_splits["pretrain"] if r.get("text")][:6])
    data = {
        "base": str(app_lab / "base"), "aligner": str(app_lab / "aligner"),
        "systems": [{"name": "lora", "adapter": str(app_lab / "adapters" / "dpo")},
                    {"name": "full", "model": str(app_lab / "base")}],
        "reverse": {"kind": "benign", "path": str(tmp / "benign.jsonl"), "max_new_tokens": 8},
        "recipe": "minilab/sft",
        "recipe_overrides": ["model.quantization=none", f"training.batch_size={BATCH}", "training.lr=1e-2",
                             "training.gradient_checkpointing=false", "training.logging_steps=1",
                             "training.save_steps=2", "training.progress=false", "data.max_length=64"],
        "sizes": SIZES,
        "eval": {"dataset": {"path": str(app_lab / "data" / "eval_prompts.jsonl"), "limit": 8},
                 "judges": [{"kind": "python", "factory": LAB_JUDGE,
                             "options": {"world": str(app_lab / "data" / "world.json")}}],
                 "generation": {"max_new_tokens": 8, "batch_size": 8},
                 "tax": {"capability": str(tmp / "capability.jsonl")}, "bootstrap": 50},
        "output": str(tmp / "out"), "progress": False,
    }
    cfg = from_dict(ElasticityConfig, data, source="test")
    first: list[str] = []
    result = run_elasticity(cfg, log=first.append)
    again: list[str] = []
    second = run_elasticity(from_dict(ElasticityConfig, data, source="test"), log=again.append)
    return tmp / "out", result, second, first, again, prompts, data


def _run_dir(out, name):
    (folder,) = (out / "train").glob(f"{name}-*")
    return folder


@pytest.mark.slow
def test_one_run_per_system_saves_a_point_at_each_size(run):
    out, result, _, _, _, prompts, _ = run
    rows = read_jsonl(out / "reverse" / "rows.jsonl")
    assert len(rows) == max(SIZES)
    # the file's order, minus the prompts the base refused or left unanswered (counted in the result)
    order, at = [p["prompt"] for p in prompts], -1
    for r in rows:
        at = order.index(r["prompt"], at + 1)
    info = result["reverse"]
    assert at + 1 == len(rows) + info["dropped_refusals"] + info["dropped_empty"]
    assert all(r["completion"].strip() for r in rows)  # the base's own answers
    for name, weights in (("lora", "adapter_model.safetensors"), ("full", "model.safetensors")):
        run_dir = _run_dir(out, name)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["global_step"] == max(SIZES) // BATCH  # one pass over the largest size, not one run per size
        blobs = []
        for n in SIZES:
            point = run_dir / "points" / f"rows-{n}"
            assert json.loads((point / "point.json").read_text()) == {"rows": n, "step": n // BATCH}
            blobs.append((point / weights).read_bytes())
        assert blobs[0] != blobs[1]  # saved at different steps of the run
    lora_point = _run_dir(out, "lora") / "points" / f"rows-{SIZES[0]}"
    assert json.loads((lora_point / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        result["base"]


@pytest.mark.slow
def test_every_point_is_scored_by_the_eval_with_intervals(run):
    out, result, _, _, _, _, _ = run
    assert set(result["series"]) == {"lora", "lora -> aligner", "full", "full -> aligner"}
    for label, s in result["series"].items():
        assert [p["rows"] for p in s["points"]] == [0, *SIZES]
        for p in s["points"]:
            assert p["metrics"], (label, p)
            for c in p["metrics"].values():
                assert c["lo"] <= c["mean"] <= c["hi"] and c["n"] > 0
            assert "nll_distance" in p
        assert set(s["half_gain"]) == set(s["points"][0]["metrics"])
    # the whole model at 0 rows is the base itself: no distance; trained further, it moves
    full = result["series"]["full"]["points"]
    assert full[0]["nll_distance"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert abs(full[-1]["nll_distance"]["mean"]) > 1e-4
    # an adapter point's distance carries the eval's paired interval
    d = result["series"]["lora"]["points"][-1]["nll_distance"]
    assert d["lo"] <= d["mean"] <= d["hi"]
    # the Aligner corrects the upstream's answers at every point (the tiny Aligner always abstains)
    assert all(p["aligner_edit_rate"]["mean"] > 0 for p in result["series"]["full -> aligner"]["points"])
    saved = json.loads((out / "elasticity.json").read_text())
    assert saved["series"].keys() == result["series"].keys()
    assert (out / "elasticity.png").stat().st_size > 0 and "## lora -> aligner" in (out / "elasticity.md").read_text()


@pytest.mark.slow
def test_a_second_run_trains_and_generates_nothing(run):
    out, result, second, first, again, _, _ = run
    assert any("fine-tuning" in line for line in first)
    assert not any("fine-tuning" in line or "[eval] " in line for line in again), again
    # one reference (both kinds load the base unquantized here), one eval of the adapter's points, one per full point
    assert sum("eval cached" in line for line in again) == 1 + 1 + (1 + len(SIZES))
    assert second["series"] == result["series"]


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_saves_only_the_missing_point(run):
    import torch
    from safetensors.torch import load_file

    from lightalign.config import from_dict
    from lightalign.evaluation.elasticity import ElasticityConfig, run_elasticity

    out, result, _, _, _, _, data = run
    run_dir = _run_dir(out, "lora")
    last, first = (run_dir / "points" / f"rows-{n}" for n in (SIZES[-1], SIZES[0]))
    before = load_file(last / "adapter_model.safetensors")
    kept = (first / "adapter_model.safetensors").stat().st_mtime_ns
    # as a run killed after its checkpoint at step 2: no last point, no final save
    shutil.rmtree(last)
    (run_dir / "metrics.json").unlink()
    for ckpt in (run_dir / "checkpoints").glob("checkpoint-*"):
        if int(re.sub(r"\D", "", ckpt.name)) > 2:
            shutil.rmtree(ckpt)
    log: list[str] = []
    again = run_elasticity(from_dict(ElasticityConfig, data, source="test"), log=log.append)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(run_dir / "checkpoints" / "checkpoint-2")
    assert (first / "adapter_model.safetensors").stat().st_mtime_ns == kept  # a saved point is kept
    after = load_file(last / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)  # the same run, resumed
    assert not any("fine-tuning" in line for line in log if "full" in line)  # the other system is untouched
    assert [p["rows"] for p in again["series"]["lora"]["points"]] == [0, *SIZES]


# ---------------------------------------------------------------- the lab stages' configs

def _fake_lab(root):
    rows = [{"prompt": f"q{i}", "completion": "a", "kind": k} for i, k in
            enumerate(["answerable", "harmful", "unanswerable", "format", "harmful"] * 12)]
    write_jsonl(root / "data" / "sft.jsonl", rows)
    write_jsonl(root / "data" / "preference.jsonl",
                [{"prompt": "q1", "chosen": "a", "rejected": "b", "kind": "harmful"},  # also in sft: once
                 {"prompt": "p-extra", "chosen": "a", "rejected": "b", "kind": "harmful"}])
    return rows


def test_mini_lab_stage_config_is_valid_and_uses_training_prompts_only(tmp_path):
    from lightalign.config import from_dict
    from lightalign.evaluation.elasticity import ElasticityConfig, recipe_for
    from lightalign.lab.elasticity import elasticity_config

    rows = _fake_lab(tmp_path)
    data = elasticity_config(tmp_path, "harmful")
    cfg = from_dict(ElasticityConfig, data, source="lab")
    prompts = read_jsonl(cfg.reverse.path)
    assert [p["prompt"] for p in prompts] == [r["prompt"] for r in rows if r["kind"] == "harmful"] + ["p-extra"]
    benign = read_jsonl(from_dict(ElasticityConfig, elasticity_config(tmp_path, "benign"), source="lab").reverse.path)
    assert {p["kind"] for p in benign} == {"answerable", "format"}
    adapter, full = cfg.systems
    assert (adapter.finetune, full.finetune) == ("lora", "full")
    full_recipe = recipe_for(cfg, full, tmp_path / "rows.jsonl").config  # sizes are whole batches
    assert (full_recipe.lora.enabled, full_recipe.model.quantization, full_recipe.training.lr) == (False, "none", 3e-4)
    lora = recipe_for(cfg, adapter, tmp_path / "rows.jsonl").config
    assert lora.lora.init_from == str(tmp_path / "adapters" / "dpo") and lora.training.scheduler == "constant"
    assert lora.data.max_rows == max(cfg.sizes) and lora.sft.packing is False


def test_real_track_stage_config_is_valid(tmp_path):
    from lightalign.config import from_dict
    from lightalign.evaluation.elasticity import ElasticityConfig, recipe_for
    from lightalign.lab.real.elasticity import elasticity_config
    from lightalign.lab.real.track import TrackConfig

    write_jsonl(tmp_path / "train" / "base_answers.jsonl",
                [{"prompt": f"h{i}", "kind": "harmful", "answer": "Sure."} for i in range(3)]
                + [{"prompt": "s0", "kind": "safe", "answer": "Yes."}])
    write_jsonl(tmp_path / "data" / "eval_prompts.jsonl",
                [{"prompt": f"e{i}", "kind": "harmful", "set": "harmbench", "source": "harmbench"} for i in range(4)])
    cfg = from_dict(ElasticityConfig, elasticity_config(TrackConfig(), tmp_path, "harmful"), source="real")
    assert [r["prompt"] for r in read_jsonl(cfg.reverse.path)] == ["h0", "h1", "h2"]
    assert len(cfg.sizes) >= 4 and cfg.aligner == str(tmp_path / "aligner")
    recipe = recipe_for(cfg, cfg.systems[0], tmp_path / "rows.jsonl").config
    assert recipe.model.name_or_path == cfg.base and recipe.lora.init_from == str(tmp_path / "adapters" / "dpo")
