"""`lightalign app`: the comparison page for a base model, its adapter and an Aligner."""

from __future__ import annotations

from pathlib import Path

from lightalign.app.config import DEFAULT_CONFIG
from lightalign.config import apply_overrides, from_dict, read_yaml
from lightalign.errors import UserError, deprecated
from lightalign.model_sources import resolve as resolve_model

HELP = "Open a local Gradio page comparing the base model, base + adapter, and the Aligner's correction."
FLAGS = ("base", "adapter", "aligner", "quantization", "host", "port")


def add_arguments(p):
    p.add_argument("--config", metavar="YAML",
                   help=f"AppConfig YAML (keys: base, adapter, aligner, quantization, host, port, examples, judge, "
                        f"judge_options, rewrites, rewordings, max_prompt_chars, max_new_tokens, concurrency_limit, max_queue, ...). "
                        f"Default, when neither --config nor --base is given: {DEFAULT_CONFIG} "
                        f"(written by `lightalign lab`)")
    p.add_argument("--lab", metavar="DIR", help="deprecated: same as --config DIR/app.yaml")
    p.add_argument("--base", metavar="PATH", help="base model folder")
    p.add_argument("--adapter", metavar="PATH", help="PEFT adapter folder for that base ('none' = no adapter column)")
    p.add_argument("--aligner", metavar="PATH", help="Aligner folder ('none' = no correction)")
    p.add_argument("--quantization", choices=["nf4", "none"], help="base weights: nf4 = 4-bit NF4 as the QLoRA adapters were trained (default), none = full precision")
    p.add_argument("--host", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="port (default: 7860)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any other AppConfig field, e.g. max_queue=4")


def config_file(args) -> str | None:
    """The YAML to read: --config, --lab DIR's app.yaml, or the default file when there is no --base."""
    if getattr(args, "lab", None):
        path = Path(args.lab) / "app.yaml"
        deprecated(f"--lab is deprecated; use --config {path}")
        if args.config:
            raise UserError("command line: give --config or --lab, not both")
        if not path.is_file():
            raise UserError(f"--lab {args.lab}: no {path} (`lightalign lab --dir {args.lab}` writes it)")
        return str(path)
    if args.config:
        return args.config
    if args.base is None and Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    return None


def resolve_config(args):
    """(AppConfig, the YAML it came from or None): the YAML's keys, then key=value overrides, then flags."""
    import dataclasses

    from lightalign.app.config import AppConfig

    path = config_file(args)
    raw = read_yaml(path) if path else {}
    if "lab" in raw:
        raise UserError(f"{path}: key 'lab' was removed: use `--config <lab folder>/app.yaml` (written by "
                        f"`lightalign lab`), or set base, adapter, aligner and examples")
    apply_overrides(raw, list(getattr(args, "overrides", None) or []))
    cfg = from_dict(AppConfig, raw, path or "command line")
    flags = {k: getattr(args, k, None) for k in FLAGS}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    try:
        cfg.validate()
    except ValueError as e:
        raise UserError(f"command line: {e}") from None
    if cfg.base_path is None:
        if path:
            raise UserError(f"{path}: no base model: set `base` in it, or give --base")
        raise UserError(f"no model to serve: run `lightalign lab` (it writes {DEFAULT_CONFIG}, served by default), "
                        f"or give --base MODEL_DIR or --config APP.yaml")
    cfg = dataclasses.replace(cfg, base=resolve_model(cfg.base, what=f"base ({path or '--base'})"))
    if not cfg.base_path.is_dir():
        raise UserError(f"base model {cfg.base_path}: no such folder ({path or '--base'})")
    return cfg, path


def run(args):
    from lightalign.app.examples import Examples
    from lightalign.app.models import Models

    cfg, path = resolve_config(args)
    if path and not args.config:
        print(f"config: {path}")
    examples = Examples.from_config(cfg)  # a bad file or judge fails here, before any model loads
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {cfg.host}: anyone who can reach this address can use the models")
    print(f"loading {cfg.base_path} ...", flush=True)
    models = Models(cfg)
    for name, s in models.describe().items():
        print(f"  {name}: {'ok' if s.ok else 'missing'}: {s.message}")
    print(f"  examples: {examples.describe()}")

    from lightalign.app.ui import launch  # gradio is imported only now: the CLI stays fast

    try:
        launch(models, examples, block=True)
    except OSError as e:  # typically the port is taken by another server
        raise UserError(f"cannot serve on {cfg.host}:{cfg.port}: {e} (pick another with --port)") from None
    return 0
