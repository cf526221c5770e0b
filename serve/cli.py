"""`lightalign serve`: an OpenAI-compatible endpoint whose answers are post-edited by the Aligner."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Serve an OpenAI-compatible /v1/chat/completions that corrects an upstream model's answers."

DEFAULT_LAB = Path("runs/minilab")
DEFAULT_API_KEY_ENV = "LIGHTALIGN_API_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", type=Path, help="Aligner directory (default: <lab>/aligner)")
    up = p.add_argument_group("upstream (default: the lab's base model)")
    up.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/v1")
    up.add_argument("--upstream-model", help="model name sent to --upstream-url (also the served model id)")
    up.add_argument("--upstream-key-env", metavar="VAR",
                    help="environment variable holding the upstream API key (the key is never logged)")
    up.add_argument("--upstream-max-connections", type=int, default=64, metavar="N",
                    help="at most N requests in flight to --upstream-url (others wait their turn)")
    up.add_argument("--upstream-model-path", type=Path, help="local transformers model directory")
    up.add_argument("--adapter", type=Path, help="LoRA adapter directory for --upstream-model-path")
    p.add_argument("--lab", type=Path, default=DEFAULT_LAB, help=f"mini-lab directory (default {DEFAULT_LAB})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", metavar="VAR",
                   help=f"require clients to send this variable's value as Bearer key "
                        f"(default: {DEFAULT_API_KEY_ENV} when it is set)")
    p.add_argument("--max-batch-size", type=int, default=16, help="corrections per Aligner call")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for a batch to fill")
    p.add_argument("--max-request-bytes", type=int, default=1_000_000, help="larger request bodies get 413")
    p.add_argument("--upstream-timeout", type=float, default=120.0, help="seconds before an upstream call is a 504")
    p.add_argument("--max-tokens", type=int, default=128, help="local upstream: default new tokens per answer")


def build_config(args):
    from lightalign.errors import UserError
    from lightalign.serve.config import ServeConfig, secret_from_env

    if args.upstream_url and args.upstream_model_path:
        raise UserError("--upstream-url and --upstream-model-path are exclusive: pick one upstream")
    if args.adapter and not args.upstream_model_path and args.upstream_url:
        raise UserError("--adapter applies to a local model (--upstream-model-path), not to --upstream-url")
    if args.upstream_key_env and not args.upstream_url:
        raise UserError("--upstream-key-env needs --upstream-url")
    if args.api_key_env:
        api_key = secret_from_env(args.api_key_env, "--api-key-env")
    else:
        api_key = secret_from_env(DEFAULT_API_KEY_ENV, DEFAULT_API_KEY_ENV, required=False)
    cfg = ServeConfig(host=args.host, port=args.port, api_key=api_key, max_batch_size=args.max_batch_size,
                      max_wait_ms=args.max_wait_ms, max_request_bytes=args.max_request_bytes,
                      upstream_timeout_s=args.upstream_timeout, default_max_tokens=args.max_tokens)
    cfg.validate()
    if args.upstream_max_connections < 1:
        raise UserError(f"--upstream-max-connections {args.upstream_max_connections}: must be >= 1")
    return cfg


def resolve_paths(args) -> tuple[Path, Path | None]:
    """(aligner dir, local upstream model dir or None for a URL upstream), checked to exist."""
    from lightalign.errors import UserError

    aligner = args.aligner or args.lab / "aligner"
    if not aligner.exists():
        hint = "" if args.aligner else f" (build the lab with `lightalign lab --dir {args.lab}`, or pass --aligner)"
        raise UserError(f"{aligner}: Aligner not found{hint}")
    model_path = None
    if not args.upstream_url:
        model_path = args.upstream_model_path or args.lab / "base"
        if not (model_path / "config.json").exists():
            hint = "" if args.upstream_model_path else " (pass --upstream-url or --upstream-model-path)"
            raise UserError(f"{model_path}: no model here (config.json missing){hint}")
        if args.adapter and not args.adapter.exists():
            raise UserError(f"{args.adapter}: adapter not found")
    return aligner, model_path


def run(args) -> int:
    import logging

    import uvicorn

    from lightalign.serve import backends
    from lightalign.serve.app import create_app
    from lightalign.serve.config import secret_from_env
    from lightalign.serve.upstream import HTTPUpstream

    cfg = build_config(args)
    aligner_path, model_path = resolve_paths(args)
    log = logging.getLogger("lightalign.serve")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.upstream_url:
        key = secret_from_env(args.upstream_key_env, "--upstream-key-env")
        upstream = HTTPUpstream(args.upstream_url, args.upstream_model, key, timeout_s=cfg.upstream_timeout_s,
                                max_connections=args.upstream_max_connections)
        shown = _without_userinfo(args.upstream_url)
        where = f"{shown} (key from ${args.upstream_key_env})" if key else shown
    else:
        upstream = backends.local_upstream(model_path, args.adapter, cfg)
        where = f"{model_path}" + (f" + adapter {args.adapter}" if args.adapter else "")
    aligner = backends.load_aligner(aligner_path)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        log.warning("binding %s without an API key: anyone who can reach this port can use it", cfg.host)
    log.info("upstream: %s; aligner: %s; clients: %s", where, aligner_path,
             "Bearer key required" if cfg.api_key else "no key required")
    app = create_app(cfg, upstream, aligner)
    print(f"OpenAI-compatible endpoint: http://{cfg.host}:{cfg.port}/v1", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", limit_concurrency=256,
                timeout_keep_alive=5, server_header=False)
    return 0


def _without_userinfo(url: str) -> str:
    """A URL fit for the log: `https://user:pass@host/v1` -> `https://***@host/v1`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
