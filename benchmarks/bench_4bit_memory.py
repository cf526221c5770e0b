"""Model footprint of the 4-bit NF4 (double quant) base vs the same base in 16-bit, in one run.

Measured: bytes actually held by the loaded weights (packed 4-bit data + NF4 block constants +
everything left unquantized), for the mini-lab base and for a small model built from a real
architecture's shape. The unquantized parts (embeddings, lm_head, norms) stay 16-bit as on a GPU
(bf16); with fp32 there (this repo's CPU compute dtype, or PEFT's training upcast) they cost more,
printed too. For 7-8B models, which cannot be loaded here, the estimator's weight terms (checked
against these measurements in tests/test_adapters_estimate.py) give the ratio.

    python benchmarks/bench_4bit_memory.py [--lab /work/labs/minilab]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightalign.adapters.estimate import weight_bytes  # noqa: E402



def measure(path: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lightalign.loading import quantization_config

    out = {}
    sixteen = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    out["bf16"] = weight_bytes(sixteen)
    out["params"] = sum(p.numel() for p in sixteen.parameters())
    out["linear_params"] = sum(m.weight.numel() for n, m in sixteen.named_modules()
                               if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    del sixteen
    for name, dtype in (("nf4+bf16", torch.bfloat16), ("nf4+fp32", torch.float32)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map={"": "cpu"},
                                                     quantization_config=quantization_config("nf4", True, dtype))
        out[name] = weight_bytes(model)
        out[name + " (get_memory_footprint)"] = model.get_memory_footprint()
        del model
    return out


def real_shape_model(tmp: Path) -> Path:
    """Mistral-7B's proportions at hidden 1024 x 8 layers: GQA 4:1, MLP 3.5x, and a vocabulary cut so
    embeddings + lm_head stay ~3.6% of the parameters, as in the 7B model (its 32k vocab at this width
    would make them 38% and measure the embeddings instead of the quantization)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=2048, hidden_size=1024, intermediate_size=3584, num_hidden_layers=8,
                      num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    return tmp


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab", default=None)
    a = p.parse_args()
    from lightalign.adapters.estimate import KNOWN, Setup, estimate

    models = []
    for cand in [a.lab, "/work/labs/minilab", "runs/minilab"]:
        if cand and (Path(cand) / "base" / "model.safetensors").exists():
            models.append(("mini-lab base", Path(cand) / "base"))
            break
    with tempfile.TemporaryDirectory() as tmp:
        models.append(("Mistral-7B proportions, 8 x 1024", real_shape_model(Path(tmp))))
        print(f"{'model':38s} {'params':>10s} {'16-bit':>10s} {'NF4+16-bit rest':>16s} {'ratio':>6s} "
              f"{'NF4+fp32 rest':>14s} {'ratio':>6s}")
        for name, path in models:
            m = measure(path)
            print(f"{name:38s} {m['params'] / 1e6:9.2f}M {m['bf16'] / 2**20:8.2f}MiB {m['nf4+bf16'] / 2**20:14.2f}MiB "
                  f"{m['nf4+bf16'] / m['bf16']:5.3f}x {m['nf4+fp32'] / 2**20:12.2f}MiB {m['nf4+fp32'] / m['bf16']:5.3f}x"
                  f"   (linear layers: {m['linear_params'] / m['params']:.0%} of params)")
    print("\nfrom the estimator's weight terms (4-bit linears + 16-bit rest) / (all 16-bit):")
    for name in ("llama-2-7b", "mistral-7b", "llama-3.1-8b", "qwen2.5-7b", "qwen2.5-1.5b"):
        q = estimate(KNOWN[name], Setup(upcast_non_quantized=False))["terms"]
        f = estimate(KNOWN[name], Setup(quantization="none"))["terms"]
        ratio = (q["base_4bit_linear"] + q["base_unquantized"]) / (f["base_linear"] + f["base_unquantized"])
        print(f"  {name:14s} {ratio:.3f}x   (quantized linears alone: {q['base_4bit_linear'] / f['base_linear']:.3f}x)")
    print("target: <= 0.35x")


if __name__ == "__main__":
    main()
