"""`lightalign app`: the comparison page, serving the mini-lab models unless told otherwise."""

from __future__ import annotations

HELP = "Open a local Gradio page comparing the base model, base + adapter, and the Aligner's correction."


def add_arguments(p):
    p.add_argument("--config", metavar="YAML", help="AppConfig YAML (keys: lab, base, adapter, aligner, "
                   "quantization, host, port, max_prompt_chars, concurrency_limit, max_queue, ...)")
    p.add_argument("--lab", metavar="DIR", help="mini-lab folder for default models, examples and judges "
                   "(default: runs/minilab)")
    p.add_argument("--base", metavar="PATH", help="base model folder (default: <lab>/base)")
    p.add_argument("--adapter", metavar="PATH", help="PEFT adapter folder (default: <lab>/adapters/dpo; 'none' = off)")
    p.add_argument("--aligner", metavar="PATH", help="Aligner folder (default: <lab>/aligner; 'none' = off)")
    p.add_argument("--quantization", choices=["nf4", "none"], help="base weights: nf4 = 4-bit NF4 as the QLoRA adapters were trained (default), none = full precision")
    p.add_argument("--host", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="port (default: 7860)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any other AppConfig field, e.g. max_queue=4")


def resolve_config(args):
    """AppConfig from the YAML (if any) and key=value overrides, then the explicit flags on top."""
    import dataclasses

    from lightalign.app.config import AppConfig
    from lightalign.config import load_config
    from lightalign.errors import UserError

    cfg = load_config(AppConfig, args.config, overrides=list(getattr(args, "overrides", None) or []))
    flags = {k: getattr(args, k, None) for k in ("lab", "base", "adapter", "aligner", "quantization", "host", "port")}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(f"command line: {e}") from None
    return cfg


def check_lab(cfg) -> None:
    """With no --base, the lab's base is the model: say how to build it instead of a traceback."""
    from lightalign.errors import UserError

    if cfg.uses_lab_base() and not (cfg.base_path / "config.json").exists():
        raise UserError(f"no mini-lab model at {cfg.base_path}: run `lightalign lab` first "
                        f"(or point --base at a model folder)")


def run(args):
    from lightalign.app.labdata import LabData
    from lightalign.app.models import Models

    cfg = resolve_config(args)
    check_lab(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {cfg.host}: anyone who can reach this address can use the models")
    print(f"loading {cfg.base_path} ...", flush=True)
    models = Models(cfg)
    for name, s in models.describe().items():
        print(f"  {name}: {'ok' if s.ok else 'missing'}: {s.message}")
    lab = LabData(cfg.lab_dir)

    from lightalign.app.ui import launch  # gradio is imported only now: the CLI stays fast

    try:
        launch(models, lab, block=True)
    except OSError as e:  # typically the port is taken by another server
        from lightalign.errors import UserError

        raise UserError(f"cannot serve on {cfg.host}:{cfg.port}: {e} (pick another with --port)") from None
    return 0
