"""`lightalign estimate RECIPE.yaml [key=value ...] [--card 24] [--gpus N --fsdp --cpu-offload]`: peak
training memory before training, per GPU on several GPUs (DDP, or FSDP as an accelerate config sets it)."""

from __future__ import annotations

from lightalign.errors import UserError

HELP = "Predict a recipe's peak training memory (weights, adapter, optimizer, activations) and whether it fits a card."

CARDS = {"8": 8, "12": 12, "16": 16, "24": 24, "40": 40, "48": 48, "80": 80,
         "rtx3060": 12, "rtx3070": 8, "rtx3080": 10, "rtx3090": 24, "rtx4060": 8, "rtx4070": 12,
         "rtx4080": 16, "rtx4090": 24, "t4": 16, "l4": 24, "a10": 24, "a100-40gb": 40, "a100": 80, "h100": 80}


def add_arguments(p):
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.batch_size=4")
    p.add_argument("--card", default=None, help="GPU memory in GiB or a card name (rtx4090, a100, ...); "
                                                "default: list common sizes")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="where it will train: cuda = bf16 compute, cpu = fp32 (default: cuda)")
    p.add_argument("--gpus", type=int, default=None, help="processes, one per GPU (default 1, or num_processes of "
                                                           "--accelerate-config); the estimate is then per GPU")
    p.add_argument("--fsdp", action="store_true", help="FSDP FULL_SHARD over the GPUs (default: DDP replicas)")
    p.add_argument("--cpu-offload", action="store_true", help="FSDP with fsdp_offload_params: sharded weights, "
                                                               "gradients and optimizer states in CPU RAM")
    p.add_argument("--accelerate-config", default=None,
                   help="the accelerate config you launch with (e.g. recipes/accelerate/fsdp_qlora.yaml): "
                        "sets --gpus, --fsdp and --cpu-offload from it")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")


def parallelism(args) -> tuple[int, bool, bool]:
    """(gpus, fsdp, cpu_offload) from the flags and, under them, the accelerate config file."""
    gpus, fsdp, offload = 1, False, False
    if args.accelerate_config:
        from lightalign.config import read_yaml

        conf = read_yaml(args.accelerate_config)
        fsdp = conf.get("distributed_type") == "FSDP"
        fsdp_conf = conf.get("fsdp_config") or {}
        offload = fsdp and bool(fsdp_conf.get("fsdp_offload_params", False))
        n = conf.get("num_processes", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"{args.accelerate_config}: num_processes must be an integer >= 1, got {n!r}")
        gpus = n
    if args.gpus is not None:
        if args.gpus < 1:
            raise UserError(f"--gpus must be >= 1, got {args.gpus}")
        gpus = args.gpus
    fsdp = fsdp or args.fsdp
    offload = offload or args.cpu_offload
    if offload and not fsdp:
        raise UserError("--cpu-offload is FSDP's parameter offload: add --fsdp (or an FSDP accelerate config)")
    return gpus, fsdp and gpus > 1, offload and gpus > 1


def run(args):
    import json

    from lightalign.adapters import estimate as est
    from lightalign.training import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    path, cfg, method = recipe.path, recipe.config, recipe.method
    if method not in ("sft", "dpo", "orpo"):
        raise UserError(f"{path}: estimate covers adapter recipes (sft, dpo, orpo), not method {method!r}")
    arch = est.resolve_arch(cfg.model.name_or_path)
    gpus, fsdp, offload = parallelism(args)
    setup = est.setup_from_recipe(cfg, method, device=args.device, gpus=gpus, fsdp=fsdp, cpu_offload=offload)
    out = est.report(arch, setup)
    if args.card is not None:
        key = str(args.card).lower().replace(" ", "")
        try:
            cards = {key: CARDS[key] if key in CARDS else float(key)}
        except ValueError:
            raise UserError(f"--card: {args.card!r} is neither a size in GiB nor one of {', '.join(CARDS)}") from None
        if not 0 < cards[key] < float("inf"):
            raise UserError(f"--card: {args.card!r} must be a size in GiB > 0")
    else:
        cards = {f"{g} GiB": g for g in (8, 12, 16, 24, 48, 80)}
    verdicts = {name: est.fits(out["peak_bytes"], gib) for name, gib in cards.items()}
    if args.json:
        print(json.dumps({**out, "setup": est.asdict(setup),
                          "fits": {k: {"fits": f, "headroom_gib": round(h, 2)} for k, (f, h) in verdicts.items()}},
                         indent=2))
        return 0
    def size(n: float) -> str:
        return f"{n / est.GIB:8.2f} GiB" if n >= est.GIB / 10 else f"{n / 2**20:8.1f} MiB"

    params = out["base_params"]
    count = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
    where = args.device if gpus == 1 else \
        f"each of {gpus} GPUs, {'FSDP' + (' + CPU offload' if offload else '') if fsdp else 'DDP'}"
    print(f"{path} ({method}, {cfg.model.name_or_path}: {count} params, LoRA {out['lora_params'] / 1e6:.2f}M, "
          f"{out['tokens_per_step']} tokens/step on {where})")
    for name, value in out["terms"].items():
        print(f"  {name:<26} {size(value)}")
    gc = "on" if setup.gradient_checkpointing else "off"
    other = "off" if setup.gradient_checkpointing else "on"
    print(f"  {'peak (checkpointing ' + gc + ')':<26} {size(out['peak_bytes'])}")
    print(f"  {'peak (checkpointing ' + other + ')':<26} {size(out['peak_bytes_other_checkpointing'])}")
    if out.get("cpu_offloaded_bytes"):
        print(f"  {'in CPU RAM per process':<26} {size(out['cpu_offloaded_bytes'])}")
    per = " per GPU" if gpus > 1 else ""
    for name, (ok, headroom) in verdicts.items():
        print(f"  fits {name}{per}: {'yes' if ok else 'NO'} ({headroom:+.1f} GiB headroom incl. CUDA context and "
              f"{int(100 * (est.FRAGMENTATION - 1))}% allocator slack)")
    return 0 if all(ok for ok, _ in verdicts.values()) or args.card is None else 1
