"""Weak-to-strong in the mini-lab: the Aligner's corrections of the base's own answers become the only
preference data for a DPO adapter on the base (chosen = correction, rejected = answer).

This is the Aligner paper's weak-to-strong set-up in miniature: no hand-written preference pair is
used, only what the small corrector produced on *training* prompts (never the held-out ones). The
adapter starts fresh on the base (no SFT adapter), so its reference is the base with the adapter disabled.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.io import read_jsonl
from lightalign.lab.cache import build_atomically, read_key, stage_key
from lightalign.lab.training import QUICK, run_recipe

# From the bare base, DPO needs a larger step than when it polishes an SFT adapter (measured:
# lr 5e-5 x 1 epoch barely moves the base; 5e-4 collapses it).
W2S_DPO = ["lora.init_from=null", "training.lr=1e-4", "training.epochs=2"]
QUICK_PROMPTS = 200  # --small: the first 200 training prompts


def build_pairs(lab: Path, quick: bool = False, log=print) -> Path:
    """<lab>/w2s/dpo.jsonl: the base answers the SFT training prompts, the Aligner corrects them."""
    from lightalign.aligner import Aligner
    from lightalign.aligner.weak_to_strong import write_preference
    from lightalign.generation import generate_chat
    from lightalign.loading import load_for_inference

    limit = QUICK_PROMPTS if quick else None
    final = lab / "w2s"

    def build(tmp: Path) -> dict:
        questions = list(dict.fromkeys(r["prompt"] for r in read_jsonl(lab / "data" / "sft.jsonl")))[:limit]
        log(f"[weak2strong] the base answers {len(questions)} training prompts, the Aligner corrects them")
        model, tokenizer = load_for_inference(str(lab / "base"))
        answers = generate_chat(model, tokenizer, questions, max_new_tokens=64, batch_size=64)
        aligner = Aligner.from_pretrained(lab / "aligner")
        write_preference(aligner, list(zip(questions, answers)), tmp / "dpo.jsonl", batch_size=64)
        return {"pairs": len(read_jsonl(tmp / "dpo.jsonl")), "questions": len(questions)}

    key = stage_key("w2s-pairs", read_key(lab / "base"), read_key(lab / "data"), read_key(lab / "aligner"), limit)
    build_atomically(final, key, build, log, "weak2strong")
    return final / "dpo.jsonl"


def run_weak_to_strong(lab: Path, quick: bool = False, log=print) -> dict:
    lab = Path(lab)
    data = build_pairs(lab, quick, log)
    overrides = [f"model.name_or_path={lab / 'base'}", f"data.path={data}",
                 f"output_dir={lab / 'adapters' / 'w2s_dpo'}"] + W2S_DPO + (QUICK["adapter"] if quick else [])
    metrics = run_recipe("dpo", overrides, [read_key(lab / "base"), read_key(lab / "w2s")], log)
    return {"pairs": len(read_jsonl(data)), "data": str(data), "train": metrics}
