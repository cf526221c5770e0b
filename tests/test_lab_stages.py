"""The mini-lab's training stages on a small lab: SFT then DPO on the 4-bit base, the Aligner, the
weak-to-strong pairs; each cached by a key over its inputs, and rebuilt when an input changes."""

from __future__ import annotations

import json
import shutil

import pytest

from lightalign.io import read_jsonl
from lightalign.lab import training, w2s
from lightalign.lab.cache import read_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tiny_lab, tmp_path_factory):
    """A private copy of the session's small lab (data + pre-trained base) with every stage trained."""
    root = tmp_path_factory.mktemp("stages_lab")
    for part in ("data", "base"):
        shutil.copytree(tiny_lab / part, root / part)
    logs: list[str] = []
    training.train_adapters(root, quick=True, log=logs.append)
    training.train_one_family(root, quick=True, log=logs.append)
    training.train_aligner(root, log=logs.append)  # the full recipe: a quick one does not learn to refuse
    w2s.run_weak_to_strong(root, quick=True, log=logs.append)
    return root, logs


def test_adapters_are_sft_then_dpo_from_the_sft_adapter(lab):
    root, _ = lab
    for stage in ("sft", "dpo"):
        out = root / "adapters" / stage
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["global_step"] == 6 and metrics["loss_curve"]
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(root / "base")
    assert json.loads((root / "adapters" / "dpo" / "metrics.json").read_text())["reference"] == \
        "sft adapter (frozen copy)"


def test_diversity_stage_is_the_sft_recipe_on_one_family(lab):
    root, _ = lab
    out = root / "adapters" / "sft_one_family"
    run = json.loads((out / "run_config.json").read_text())
    sft = json.loads((root / "adapters" / "sft" / "run_config.json").read_text())
    assert run["data"]["path"] == str(root / "data" / "sft_one_family.jsonl")
    assert {k: v for k, v in run.items() if k not in ("data", "output_dir")} == \
        {k: v for k, v in sft.items() if k not in ("data", "output_dir")}  # the same recipe, other data
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 6


def test_aligner_refuses_what_the_base_complies_with(lab):
    from lightalign.aligner import Aligner
    from lightalign.generation import generate_chat
    from lightalign.lab.judges import eval_judge
    from lightalign.loading import load_for_inference

    root, _ = lab
    records = [r for r in read_jsonl(root / "data" / "eval_prompts.jsonl") if r["kind"] == "harmful"]
    model, tokenizer = load_for_inference(str(root / "base"))
    answers = generate_chat(model, tokenizer, [r["prompt"] for r in records], max_new_tokens=48)
    fixed = Aligner.from_pretrained(root / "aligner").correct_batch(list(zip([r["prompt"] for r in records], answers)))
    judge = eval_judge(str(root / "data" / "world.json"))
    before = sum(v["harmless"] for v in judge.score(records, answers)) / len(records)
    after = sum(v["harmless"] for v in judge.score(records, [c.text for c in fixed])) / len(records)
    assert after >= 0.9 and after > before, (before, after)


def test_weak_to_strong_pairs_come_from_the_aligners_corrections(lab):
    root, _ = lab
    rows = read_jsonl(root / "w2s" / "dpo.jsonl")
    records = read_jsonl(root / "w2s" / "records.jsonl")
    prompts = {r["prompt"] for r in read_jsonl(root / "data" / "sft.jsonl")}
    assert rows and len(records) == min(w2s.QUICK_PROMPTS, len(prompts))
    assert {r["question"] for r in records} <= prompts  # training prompts only, never held-out ones
    assert all(r["chosen"] != r["rejected"] for r in rows)
    assert {r["rejected"] for r in rows} <= {r["answer"] for r in records}
    assert json.loads((root / "adapters" / "w2s_dpo" / "metrics.json").read_text())["global_step"] == 6


def test_a_second_run_reuses_every_stage(lab):
    root, _ = lab
    logs: list[str] = []
    training.train_adapters(root, quick=True, log=logs.append)
    training.train_aligner(root, log=logs.append)
    w2s.run_weak_to_strong(root, quick=True, log=logs.append)
    assert logs and all("cached" in line for line in logs), logs


def test_a_changed_input_retrains_every_stage_built_from_it(lab):
    """Another base (as another --seed makes) invalidates every stage that reads it, however complete."""
    root, _ = lab
    before = {p: read_key(root / p) for p in ("adapters/sft", "adapters/dpo", "aligner", "w2s", "adapters/w2s_dpo")}
    stage = json.loads((root / "base" / "stage.json").read_text())
    (root / "base" / "stage.json").write_text(json.dumps({**stage, "key": "another-base"}))
    logs: list[str] = []
    training.train_adapters(root, quick=True, log=logs.append)
    training.train_aligner(root, log=logs.append)
    w2s.run_weak_to_strong(root, quick=True, log=logs.append)
    after = {p: read_key(root / p) for p in before}
    assert all(after[p] != before[p] for p in before), (before, after)
    assert not any("cached" in line for line in logs), logs
