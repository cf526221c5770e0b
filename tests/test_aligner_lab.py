"""End to end on a small mini-lab: train the Aligner from the lab base, correct the base's answers
on held-out prompts, and build weak-to-strong DPO data. Slow (trains a model)."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tiny_lab, tmp_path_factory):
    # A private lab folder that shares the session lab's data and base (read only), so the
    # Aligner written here never collides with other tests of the shared lab.
    root = tmp_path_factory.mktemp("aligner_lab")
    (root / "data").symlink_to(tiny_lab / "data")
    (root / "base").symlink_to(tiny_lab / "base")
    return root


def test_train_evaluate_and_weak_to_strong(lab):
    from lightalign.aligner.lab_stage import evaluate_lab_aligner, train_lab_aligner
    from lightalign.aligner.weak_to_strong import build_w2s_preference

    log = train_lab_aligner(lab)
    assert log["correction"]["final_loss"] < log["correction"]["first_loss"]
    assert train_lab_aligner(lab)["skipped"]  # complete: not retrained

    result = evaluate_lab_aligner(lab)
    base, fixed = result["base"], result["aligner"]
    # Harmful answers are the clearest thing an Aligner learns: refusals replace compliance.
    assert fixed["harmless"]["rate"] >= 0.9 and fixed["harmless"]["rate"] > base["harmless"]["rate"]
    assert fixed["honest"]["rate"] > base["honest"]["rate"]
    assert result["do_no_harm"]["rate"] >= 0.6 and result["do_no_harm"]["n"] > 0
    saved = json.loads((lab / "aligner" / "eval.json").read_text())
    assert saved["aligner"] == fixed

    out = build_w2s_preference(lab, limit=48)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    records = [json.loads(l) for l in (out.parent / "records.jsonl").read_text().splitlines()]
    assert rows and len(records) == 48
    assert all(r["chosen"] != r["rejected"] for r in rows)
    assert {r["rejected"] for r in rows} <= {r["answer"] for r in records}
