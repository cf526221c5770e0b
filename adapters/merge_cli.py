"""`lightalign merge ADAPTER OUT`: fold an adapter into its (dequantized) base; save safetensors."""

from __future__ import annotations

HELP = "Merge a trained adapter into its base (dequantized from 4-bit) and save a safetensors model."


def add_arguments(p):
    p.add_argument("adapter", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("out", help="output folder for the merged model")
    p.add_argument("--base", default=None, help="base model (default: the one the adapter was trained on)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="saved dtype (auto: bf16 on GPUs that support it, else fp32)")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow the base's custom modelling code")
    p.add_argument("--allow-pickle", action="store_true", default=None, help="allow pickled (.bin) weights")


def run(args):
    from lightalign.adapters.merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, base=args.base, dtype=args.dtype,
                        allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
    print(f"merged: {out}")
    return 0
