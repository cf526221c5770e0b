"""SFT training throughput: our recipe vs TRL's SFTTrainer with default settings, in one run.

Same 4-bit NF4 base (the mini-lab base, or a tiny random Llama), same LoRA config, same mixed-length
rows (the lab's sft.jsonl), one pass each, runs interleaved to share the machine's noise. Tokens/s
counts real (non-pad) tokens over training time; padding waste = pad / processed tokens.

Baselines:
  trl-default  SFTTrainer(args=SFTConfig(...defaults...), peft_config=same): padding, gradient
               checkpointing on, batch 8, and on CPU its default bf16 autocast.
  trl-matched  the same, but with our precision (fp32 on CPU), batch size and no checkpointing:
               what is left is padding vs our packed rows.

    python benchmarks/bench_sft_throughput.py [--lab /work/labs/minilab] [--rows 1024] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def find_lab(arg: str | None) -> Path:
    for cand in [arg, "/work/labs/minilab", "runs/minilab"]:
        if cand and (Path(cand) / "base" / "model.safetensors").exists():
            return Path(cand)
    raise SystemExit("no mini-lab found: pass --lab (a folder with base/ and data/sft.jsonl)")


def rows_file(lab: Path, n: int, tmp: Path) -> Path:
    lines = (lab / "data" / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path = tmp / "sft.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_ours(lab: Path, data: Path, out: Path, max_length: int) -> dict:
    from lightalign.adapters import sft
    from lightalign.training import load_recipe, runs

    cfg = load_recipe("minilab/sft", [
        f"model.name_or_path={lab / 'base'}", f"data.path={data}", f"output_dir={out}", "training.epochs=1",
        f"data.max_length={max_length}", "training.progress=false", "training.save_steps=100000", "resume=never"]).config
    runs.prepare_run(cfg, "sft")
    trainer, _, parts = sft.build_trainer(cfg)
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    c = parts["recorder"].counter
    return {"tokens": c.real, "processed": c.total, "seconds": seconds, "steps": trainer.state.global_step}


def run_trl(lab: Path, data: Path, out: Path, matched: bool) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from lightalign import loading
    from lightalign.adapters.datasets import load_rows, to_dataset
    from lightalign.training import load_recipe, runs
    from lightalign.training.policy import lora_config

    cfg = load_recipe("minilab/sft", [f"model.name_or_path={lab / 'base'}", f"data.path={data}",
                                      f"output_dir={out}"]).config
    tok = loading.load_tokenizer(str(lab / "base"))
    model = loading.load_base(cfg.model, training=True)
    rows, _ = load_rows(cfg.data, "sft")
    args = {"output_dir": str(out), "report_to": [], "save_strategy": "no", "disable_tqdm": True,
            "use_cpu": not torch.cuda.is_available(), "num_train_epochs": 1, "learning_rate": cfg.training.lr}
    if matched:
        args.update(bf16=False, gradient_checkpointing=False, per_device_train_batch_size=cfg.training.batch_size)
    trainer = SFTTrainer(model=model, args=SFTConfig(**args), train_dataset=to_dataset(rows), processing_class=tok,
                         peft_config=lora_config(cfg.lora))
    counter = runs.CountingCollator(trainer.data_collator, tok.pad_token_id)
    trainer.data_collator = counter
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    return {"tokens": counter.real, "processed": counter.total, "seconds": seconds, "steps": trainer.state.global_step}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab", default=None)
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    lab = find_lab(a.lab)
    systems = {
        "ours (packed rows, max_length 128)": lambda d, o: run_ours(lab, d, o, 128),
        "ours (packed rows, max_length 256)": lambda d, o: run_ours(lab, d, o, 256),
        "trl-default (padding)": lambda d, o: run_trl(lab, d, o, matched=False),
        "trl-matched (padding)": lambda d, o: run_trl(lab, d, o, matched=True),
    }
    results = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        data = rows_file(lab, a.rows, Path(tmp))
        for r in range(a.repeats):
            for i, (name, fn) in enumerate(systems.items()):
                res = fn(data, Path(tmp) / f"run{r}-{i}")
                res["tokens_per_second"] = res["tokens"] / res["seconds"]
                res["padding_waste"] = 1 - res["tokens"] / res["processed"]
                results[name].append(res)
                print(f"[{r}] {name:38s} {res['tokens_per_second']:8.0f} tok/s  waste {100 * res['padding_waste']:5.1f}%"
                      f"  ({res['tokens']} tokens, {res['steps']} steps, {res['seconds']:.1f}s)", flush=True)
    med = {n: statistics.median(x["tokens_per_second"] for x in v) for n, v in results.items()}
    waste = {n: statistics.median(x["padding_waste"] for x in v) for n, v in results.items()}
    print(f"\nlab: {lab}  rows: {a.rows}  repeats: {a.repeats} (median tokens/s)")
    for n in systems:
        print(f"  {n:38s} {med[n]:8.0f} tok/s   padding waste {100 * waste[n]:5.1f}%")
    for ours in [n for n in systems if n.startswith("ours")]:
        for base in [n for n in systems if n.startswith("trl")]:
            print(f"  ratio {ours} / {base}: {med[ours] / med[base]:.2f}x (target >= 1.3x)")
    if a.json:
        Path(a.json).write_text(json.dumps({"median_tokens_per_second": med, "padding_waste": waste,
                                            "runs": results}, indent=2))


if __name__ == "__main__":
    main()
