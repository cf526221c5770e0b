"""A tiny lab folder with real tiny models, shared by the app, serve and eval tests (no tests here).

- data/:            the small world's eval prompts and world.json, so the lab judge applies;
- base/:            the conftest's tiny Llama after a few SFT steps (so it answers with words);
- adapters/dpo/:    a real PEFT LoRA adapter on it, with non-zero weights so answers differ;
- aligner/:         a real Aligner: the tiny Llama trained for a few seconds to answer every
                    (question, answer) pair with "I do not know." (so corrections really differ
                    from the base answer and the honesty judge can tell them apart);
- app.yaml:         the AppConfig serving all of it, as `lightalign lab` writes one.
Builders are idempotent (keyed by folder) so several test modules share one build per session.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import yaml

ABSTAIN = "I do not know."
LAB_JUDGE = "lightalign.lab.judges:eval_judge"


def write_lab_data(root: Path, splits: dict, world) -> Path:
    from lightalign.io import write_json, write_jsonl
    from lightalign.lab.splits import world_summary

    data = root / "data"
    write_jsonl(data / "eval_prompts.jsonl", splits["eval_prompts"])
    write_json(data / "world.json", world_summary(world))
    return data


def make_lora_adapter(base_dir: Path, out: Path, seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    # init_lora_weights=False: random A *and* B, so the adapter visibly changes the answers
    cfg = LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(out, safe_serialization=True)
    return out


def _fit(model, pad_id: int, rows: list[tuple[list[int], list[int]]], steps: int) -> None:
    """A few full-batch AdamW steps on (prompt ids, target ids), loss on the targets only."""
    import torch

    seqs = [p + t for p, t in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = torch.tensor([[-100] * len(p) + t + [-100] * (width - len(p) - len(t)) for p, t in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a hidden-64 model gains nothing from threads and loses a lot on a busy machine
    try:
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()


def make_talking_base(tiny_dir: Path, out: Path, sft_rows: list[dict], steps: int = 30) -> Path:
    """The random tiny Llama only repeats the chat template's last token (an empty answer); a few
    steps on lab SFT replies make it say something, so the columns and the diff have text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.generation import chat_prompt

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    rows = [(tok(chat_prompt(tok, r["prompt"]), add_special_tokens=False)["input_ids"],
             tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]) for r in sft_rows]
    _fit(model, tok.pad_token_id, rows, steps)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_abstaining_aligner(base_dir: Path, out: Path, pairs: list[tuple[str, str]], steps: int = 60) -> Path:
    """Fine-tune the tiny Llama, through the Aligner's own prompt encoding, to always abstain."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner import Aligner

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    aligner = Aligner(model, tok, max_new_tokens=24)
    target = tok(" " + ABSTAIN, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    _fit(model, tok.pad_token_id, [(aligner.prompt_ids(q, a), target) for q, a in pairs], steps)
    aligner.save_pretrained(out)
    return out


def app_settings(lab: Path) -> dict:
    """The lab's AppConfig keys: its models, its eval prompts as examples, the lab judge (absolute paths)."""
    lab = lab.resolve()
    return {"base": str(lab / "base"), "adapter": str(lab / "adapters" / "dpo"), "aligner": str(lab / "aligner"),
            "examples": str(lab / "data" / "eval_prompts.jsonl"), "judge": LAB_JUDGE,
            "judge_options": {"world": str(lab / "data" / "world.json")}}


def app_config(lab: Path, **overrides):
    """AppConfig of the tiny lab in full precision; keyword arguments replace its fields."""
    from lightalign.app.config import AppConfig

    return AppConfig(**{**app_settings(lab), "quantization": "none", **overrides})


def build_app_lab(root: Path, splits: dict, world, tiny_model_dir: Path) -> Path:
    done = root / ".built"
    if done.exists():
        return root
    write_lab_data(root, splits, world)
    make_talking_base(tiny_model_dir, root / "base", splits["sft"][:16])
    make_lora_adapter(root / "base", root / "adapters" / "dpo")
    pairs = [(r["question"], r["answer"]) for r in splits["aligner"][:16]]
    make_abstaining_aligner(tiny_model_dir, root / "aligner", pairs)
    (root / "app.yaml").write_text(yaml.safe_dump(app_settings(root), sort_keys=False), encoding="utf-8")
    done.write_text("ok")
    return root


def expected_answers(lab: Path, records: list[dict], max_new_tokens: int) -> tuple[dict, dict]:
    """(record, answers): the first record where the tiny models say something (a base answer,
    an adapter answer of several words), and what each column must show for it, computed without
    the app: plain transformers for the base, peft for the adapter, the Aligner for corrections."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner import Aligner
    from lightalign.generation import generate_chat

    tok = AutoTokenizer.from_pretrained(lab / "base")
    base = AutoModelForCausalLM.from_pretrained(lab / "base").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab / "base"), lab / "adapters" / "dpo")
    aligner = Aligner.from_pretrained(lab / "aligner")
    for rec in records:
        out = {"base": generate_chat(base, tok, [rec["prompt"]], max_new_tokens=max_new_tokens)[0]}
        out["adapter"] = generate_chat(adapted.eval(), tok, [rec["prompt"]], max_new_tokens=max_new_tokens)[0]
        if not out["base"] or len(out["adapter"].split()) < 2:  # streaming is seen between words
            continue
        out["aligner"] = aligner.correct(rec["prompt"], out["base"]).text
        out["adapter_aligner"] = aligner.correct(rec["prompt"], out["adapter"]).text
        return rec, out
    raise AssertionError("the tiny models answered every prompt with (almost) nothing")


def base_answer(lab: Path, prompt: str, max_new_tokens: int = 24) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.generation import generate_chat

    model = AutoModelForCausalLM.from_pretrained(lab / "base").eval()
    return generate_chat(model, AutoTokenizer.from_pretrained(lab / "base"), [prompt], max_new_tokens=max_new_tokens)[0]


@contextmanager
def launched(cfg):
    """The app launched in this process (as `lightalign app` would), closed afterwards."""
    from lightalign.app.examples import Examples
    from lightalign.app.models import Models
    from lightalign.app.ui import launch

    models = Models(cfg)
    demo = launch(models, Examples.from_config(cfg), block=False, quiet=True)
    try:
        yield demo, demo.local_url, models
    finally:
        demo.close()
