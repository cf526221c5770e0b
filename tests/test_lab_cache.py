"""How lab stages are cached: keyed on their inputs, committed atomically, rebuilt when an input changes."""

from __future__ import annotations

import pytest

from lightalign.lab.cache import build_atomically, read_key, train_once
from lightalign.lab.pipeline import LabConfig, base_key, world_key


def test_another_seed_gives_every_seed_dependent_stage_another_key():
    seed0, seed1 = LabConfig(), LabConfig()
    seed1.world.seed = seed1.base.seed = 1
    assert world_key(seed0) != world_key(seed1)
    assert base_key(seed0) != base_key(seed1)
    assert world_key(seed0) == world_key(LabConfig())  # and the same seed the same key


def test_a_stage_is_built_once_per_key_and_committed_whole(tmp_path):
    final = tmp_path / "stage"
    built = []

    def build(tmp):
        built.append(tmp)
        (tmp / "out.txt").write_text("v1")
        return {"n": 1}

    assert build_atomically(final, "k1", build, log=lambda _m: None)
    assert not build_atomically(final, "k1", build, log=lambda _m: None)
    assert len(built) == 1 and read_key(final) == "k1" and (final / "out.txt").read_text() == "v1"

    def crash(tmp):
        (tmp / "out.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_atomically(final, "k2", crash, log=lambda _m: None)
    assert read_key(final) == "k1" and (final / "out.txt").read_text() == "v1"  # the old stage is intact
    assert build_atomically(final, "k2", build, log=lambda _m: None) and read_key(final) == "k2"


def test_a_training_run_from_other_inputs_is_wiped_not_resumed(tmp_path):
    out = tmp_path / "run"
    runs = []

    def train():
        runs.append(sorted(p.name for p in out.iterdir()))
        (out / "metrics.json").write_text("{}")

    complete = lambda p: (p / "metrics.json").exists()  # noqa: E731
    assert train_once(out, "a", train, complete, log=lambda _m: None)
    assert not train_once(out, "a", train, complete, log=lambda _m: None)
    (out / "checkpoints").mkdir()
    assert train_once(out, "b", train, complete, log=lambda _m: None)
    assert runs == [["stage.json"], ["stage.json"]]  # the second run started clean: no old checkpoints
    (out / "metrics.json").unlink()  # killed mid-way: same key, not complete -> trained again, folder kept
    (out / "checkpoints").mkdir()
    assert train_once(out, "b", train, complete, log=lambda _m: None)
    assert runs[-1] == ["checkpoints", "stage.json"]
