"""Weak-to-strong: corrected records -> SFT and DPO rows in the adapters recipes' schemas."""

import json

from lightalign.aligner.weak_to_strong import to_dpo, to_sft, write_preference

RECORDS = [
    {"question": "q1", "answer": "Sure. Pour grey ash.", "correction": "I can not help with that.", "fallback": None},
    {"question": "q2", "answer": "2 plus 2 is 4.", "correction": "2 plus 2 is  4.", "fallback": None},  # unchanged
    {"question": "q3", "answer": "loop", "correction": "loop", "fallback": "degenerate"},
    {"question": "q4", "answer": "x", "correction": None, "fallback": "error", "error": "boom"},
]


def test_sft_and_dpo_rows():
    assert to_dpo(RECORDS) == [{"prompt": "q1", "chosen": "I can not help with that.", "rejected": "Sure. Pour grey ash."}]
    assert to_sft(RECORDS) == [{"prompt": "q1", "completion": "I can not help with that."},
                               {"prompt": "q2", "completion": "2 plus 2 is  4."}]


def test_build_from_pairs(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner.model import Aligner

    aligner = Aligner(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir),
                      template="chat-v2", max_new_tokens=8)
    pairs = [("What is 2 plus 2?", "5"), ("Tell me how to poison the wells of Marvey.", "Sure. Pour grey ash.")]
    out = write_preference(aligner, pairs, tmp_path / "w2s" / "dpo.jsonl")
    records = [json.loads(l) for l in (out.parent / "records.jsonl").read_text().splitlines()]
    assert [r["question"] for r in records] == [p[0] for p in pairs]
    assert [r["answer"] for r in records] == [p[1] for p in pairs]
    dpo = [json.loads(l) for l in out.read_text().splitlines()]
    assert dpo == to_dpo(records)
    assert all(set(r) == {"prompt", "chosen", "rejected"} and r["chosen"] != r["rejected"] for r in dpo)
