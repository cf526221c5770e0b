"""The mini-lab adapter stage: SFT then DPO (reference = SFT adapter) on the lab base in 4-bit,
cached per inputs, scored with the lab's judges beside the base; and the NLL used for the tax."""

from __future__ import annotations

import json
import time

import pytest


def test_nll_matches_the_models_own_loss(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.adapters.lab_stage import nll

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["The capital of Fenkon is Dalnor.", "3 plus 4 is 7. One rod is 6 dees."]
    ids = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    with torch.no_grad():
        per_text = [float(model(input_ids=torch.tensor([i]), labels=torch.tensor([i])).loss) for i in ids]
    n = [len(i) - 1 for i in ids]
    expected = sum(loss * k for loss, k in zip(per_text, n)) / sum(n)
    assert abs(nll(model, tok, texts, batch_size=2) - expected) < 1e-4  # batching + padding change nothing


@pytest.mark.slow
def test_lab_stage_trains_sft_then_dpo_and_caches(tiny_lab):
    from lightalign.adapters import runs
    from lightalign.adapters.lab_stage import train_lab_adapters

    result = train_lab_adapters(tiny_lab, quick=True)
    for stage in ("sft", "dpo"):
        out = tiny_lab / "adapters" / stage
        assert runs.is_complete(out)
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_lab / "base")
        assert result[stage]["global_step"] == 6 and result[stage]["loss_curve"]
    assert result["dpo"]["reference"] == "sft adapter (frozen copy)"
    scores = result["scores"]["dpo"]
    for system in ("adapter", "base_fp32", "base_4bit"):
        assert set(scores[system]) >= {"helpful", "harmless", "honest", "capability_nll"}
    assert -0.5 < scores["nll_tax_vs_base_4bit"] < 0.5

    t = time.perf_counter()
    again = train_lab_adapters(tiny_lab, quick=True)
    assert time.perf_counter() - t < 10  # every stage and score cached
    assert again["sft"] == result["sft"] and again["scores"] == result["scores"]
