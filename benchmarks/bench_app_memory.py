"""Process memory of the app's models: one base with the adapter switched on and off (what
`lightalign app` does) vs the naive way, two loaded models (a plain base + a base with the adapter).

Each way runs in a fresh Python process, which loads the models, answers one prompt with and one
without the adapter, and reports its RSS (psutil) and its peak RSS; "over imports" subtracts the
RSS after importing torch/transformers/peft, so the ratio compares what the models cost.

    python benchmarks/bench_app_memory.py                       # the app's default config (if any) + a synthetic ~140M Llama
    python benchmarks/bench_app_memory.py --config app.yaml     # the base and adapter of another app config
    python benchmarks/bench_app_memory.py --base B --adapter A  # your own base and adapter
    python benchmarks/bench_app_memory.py --quantization nf4    # 4-bit bases (bitsandbytes)

The default config is the one `lightalign app` serves (runs/minilab/app.yaml after `lightalign lab`);
the mini-lab model is ~2M parameters, so its weights are lost in the runtime's own few hundred MiB.
The synthetic model (random weights, a random LoRA adapter) shows the effect at a size where the
weights dominate. Nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "What is the capital of Jarvel?"


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, base: str, adapter: str, quantization: str) -> dict:
    """Runs in its own process: load the models one way, answer with and without the adapter."""
    import gc

    import peft  # noqa: F401 - imported before the baseline so both ways pay the same import cost
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from lightalign.app.config import AppConfig
    from lightalign.app.models import GenSettings, Models, load_base

    gc.collect()
    after_imports = rss_mib()
    settings = GenSettings(max_new_tokens=8)
    if mode == "switched":
        models = Models(AppConfig(base=base, adapter=adapter, aligner="none", quantization=quantization))
        if not models.has_adapter:
            raise SystemExit(f"adapter did not load: {models.status['adapter'].message}")
        models.answer(PROMPT, adapter=False, settings=settings)
        models.answer(PROMPT, adapter=True, settings=settings)
    else:  # two loaded models: a plain base, and a second base wrapped with the adapter
        from lightalign.generation import generate_chat
        from peft import PeftModel

        plain, tok = load_base(Path(base), quantization)
        second, _ = load_base(Path(base), quantization)
        adapted = PeftModel.from_pretrained(second, adapter).eval()
        generate_chat(plain, tok, [PROMPT], max_new_tokens=8)
        generate_chat(adapted, tok, [PROMPT], max_new_tokens=8)
    gc.collect()
    return {"rss": rss_mib(), "peak": peak_mib(), "after_imports": after_imports}


def in_child(*args: str) -> dict:
    """Run this script in a fresh process. Even the preparation runs there: the parent stays small,
    since a process's peak RSS (ru_maxrss) carries over into the children it starts."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(mode: str, base: Path, adapter: Path, quantization: str) -> dict:
    return in_child("--child", mode, "--base", str(base), "--adapter", str(adapter), "--quantization", quantization)


def synthetic(tmp: Path, hidden: int, layers: int, vocab: int) -> tuple[Path, Path]:
    """A random Llama of a size where weights dominate memory, and a random LoRA adapter for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                      num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=4,
                      max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                      pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    base = tmp / "synthetic_base"
    model.save_pretrained(base, safe_serialization=True)
    # a word-level tokenizer (no download): the benchmark measures memory, not language
    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(vocab - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(base)
    adapter = tmp / "synthetic_adapter"
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(adapter, safe_serialization=True)
    return base, adapter


def config_adapter(base: Path, adapter: Path | None, tmp: Path) -> tuple[Path, str]:
    """The config's adapter, or a fresh LoRA on its base if it names none (or it is not there yet)."""
    if adapter is not None and (adapter / "adapter_config.json").exists():
        return adapter, f"adapter {adapter.name}"
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp / "fresh_adapter"
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
                   ).save_pretrained(out, safe_serialization=True)
    return out, "fresh LoRA"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="an AppConfig YAML whose base and adapter to measure "
                   "(default: the app's default config, when it exists)")
    p.add_argument("--base")
    p.add_argument("--adapter")
    p.add_argument("--quantization", choices=["none", "nf4"], default="none")
    p.add_argument("--hidden", type=int, default=1024, help="synthetic model width (0 = skip it)")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--child", choices=["switched", "two", "synthetic", "config_adapter"], help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "synthetic":
        base, adapter = synthetic(Path(args.tmp), args.hidden, args.layers, args.vocab)
        print(json.dumps({"base": str(base), "adapter": str(adapter)}))
        return
    if args.child == "config_adapter":
        adapter, label = config_adapter(Path(args.base), Path(args.adapter) if args.adapter else None, Path(args.tmp))
        print(json.dumps({"adapter": str(adapter), "label": label}))
        return
    if args.child:
        print(json.dumps(child(args.child, args.base, args.adapter, args.quantization)))
        return

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cases: list[tuple[str, Path, Path]] = []
        if args.base:
            if not args.adapter:
                raise SystemExit("--base needs --adapter")
            cases.append((Path(args.base).name, Path(args.base), Path(args.adapter)))
        else:
            from lightalign.app.config import DEFAULT_CONFIG, AppConfig
            from lightalign.config import load_config

            config = args.config or DEFAULT_CONFIG
            if Path(config).is_file():
                cfg = load_config(AppConfig, config)
                if cfg.base_path is None or not (cfg.base_path / "config.json").exists():
                    raise SystemExit(f"{config}: no base model folder at {cfg.base_path}")
                extra = ["--adapter", str(cfg.adapter_path)] if cfg.adapter_path else []
                made = in_child("--child", "config_adapter", "--base", str(cfg.base_path), *extra, "--tmp", str(tmp))
                cases.append((f"{cfg.base_path.name} + {made['label']}", cfg.base_path, Path(made["adapter"])))
            elif args.config:
                raise SystemExit(f"{config}: no such file")
            else:
                print(f"(no {config}: run `lightalign lab` to include the mini-lab, or give --config)")
            if args.hidden:
                made = in_child("--child", "synthetic", "--tmp", str(tmp), "--hidden", str(args.hidden),
                                "--layers", str(args.layers), "--vocab", str(args.vocab))
                cases.append((f"synthetic Llama h{args.hidden} x{args.layers}", Path(made["base"]), Path(made["adapter"])))

        print(f"quantization={args.quantization}; MiB of process RSS after loading and answering with and without "
              "the adapter (over imports = minus the RSS right after importing torch/transformers/peft)")
        header = f"{'model':40} {'weights':>8} | {'switched':>9} {'over imp.':>9} {'peak':>7} | " \
                 f"{'two models':>10} {'over imp.':>9} {'peak':>7} | ratio (over imports)"
        print(header)
        print("-" * len(header))
        for name, base, adapter in cases:
            weights = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**20
            one = measure("switched", base, adapter, args.quantization)
            two = measure("two", base, adapter, args.quantization)
            d1, d2 = one["rss"] - one["after_imports"], two["rss"] - two["after_imports"]
            print(f"{name:40} {weights:8.1f} | {one['rss']:9.1f} {d1:9.1f} {one['peak']:7.1f} | "
                  f"{two['rss']:10.1f} {d2:9.1f} {two['peak']:7.1f} | {d1 / d2:.2f}x "
                  f"(total RSS {one['rss'] / two['rss']:.2f}x)")


if __name__ == "__main__":
    main()
