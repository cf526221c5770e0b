"""`lightalign serve`: an OpenAI-compatible endpoint whose answers are post-edited by the Aligner.

    lightalign serve --aligner ALIGNER --upstream-url http://127.0.0.1:9000/v1 --upstream-model NAME \
        [--upstream-key-env VAR]
    lightalign serve --aligner ALIGNER --upstream-model-path MODEL_DIR [--upstream-adapter LORA_DIR]
    lightalign serve --aligner ALIGNER --aligner-url http://gpu-host:8001/v1 --upstream-url ...   # stateless proxy

SIGTERM or Ctrl-C stops accepting requests, gives those in flight SHUTDOWN_GRACE_S seconds, and
exits (uvicorn then re-raises the signal, so the status is the signal's). Exit code 2: a usage error
(bad flag, missing or wrong model folder, port in use), checked before any model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lightalign.aligner.engines import add_engine_arguments, engine_from_args
from lightalign.errors import UserError

HELP = "Serve an OpenAI-compatible /v1/chat/completions that corrects an upstream model's answers."

DEFAULT_API_KEY_ENV = "LIGHTALIGN_API_KEY"
SHUTDOWN_GRACE_S = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aligner", type=Path, help="Aligner folder (required)")
    up = p.add_argument_group("upstream (exactly one of --upstream-url, --upstream-model-path)")
    up.add_argument("--upstream-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/v1 "
                                           "(/v1 is added when the URL has no path; no user:password@)")
    up.add_argument("--upstream-model", help="model name sent to --upstream-url (also the served model id)")
    up.add_argument("--upstream-key-env", metavar="VAR",
                    help="environment variable holding the upstream's API key, sent as Bearer (never logged)")
    up.add_argument("--upstream-max-connections", type=int, default=64, metavar="N",
                    help="at most N requests in flight to --upstream-url (others wait their turn)")
    up.add_argument("--upstream-continue", choices=("none", "vllm"), default="none",
                    help="vllm: --upstream-url continues a final assistant message (continue_final_message), "
                         "which --stream-mode guided needs")
    up.add_argument("--upstream-model-path", type=Path, help="local transformers model folder")
    up.add_argument("--upstream-adapter", "--adapter", dest="adapter", type=Path,
                    help="LoRA adapter folder for --upstream-model-path (as in `lightalign correct`)")
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
    p.add_argument("--stream-mode", choices=("whole", "sentence", "guided"), default="whole",
                   help="stream: true: correct the whole answer before the first byte (whole), or correct and "
                        "send each sentence as the upstream streams it (sentence), or also restart the upstream "
                        "from each corrected sentence (guided); a request may ask with "
                        "\"lightalign\": {\"stream_mode\": ...}")
    add_engine_arguments(p)


def build_config(args):
    from lightalign.openai_client import base_url, key_from_env
    from lightalign.serve.config import ServeConfig

    if args.upstream_url:
        base_url(args.upstream_url, "--upstream-url")
    if args.upstream_url and args.upstream_model_path:
        raise UserError("--upstream-url and --upstream-model-path are exclusive: pick one upstream")
    if args.adapter and args.upstream_url:
        raise UserError("--upstream-adapter applies to a local model (--upstream-model-path), not to --upstream-url")
    if args.upstream_continue != "none" and not args.upstream_url:
        raise UserError("--upstream-continue applies to --upstream-url (a local model always continues a prefix)")
    if args.upstream_key_env and not args.upstream_url:
        raise UserError("--upstream-key-env needs --upstream-url")
    if args.upstream_model and not args.upstream_url:
        raise UserError("--upstream-model is the model name sent to --upstream-url; "
                        "for a local model folder use --upstream-model-path")
    if args.api_key_env:
        api_key = key_from_env(args.api_key_env, "--api-key-env")
    else:
        api_key = os.environ.get(DEFAULT_API_KEY_ENV, "").strip() or None
    cfg = ServeConfig(host=args.host, port=args.port, api_key=api_key, max_batch_size=args.max_batch_size,
                      max_wait_ms=args.max_wait_ms, max_request_bytes=args.max_request_bytes,
                      upstream_timeout_s=args.upstream_timeout, default_max_tokens=args.max_tokens,
                      stream_mode=args.stream_mode)
    cfg.validate()
    if args.upstream_max_connections < 1:
        raise UserError(f"--upstream-max-connections {args.upstream_max_connections}: must be >= 1")
    return cfg


def check_paths(args) -> None:
    """The Aligner and the upstream exist and are what their flag says, before anything loads."""
    from lightalign.aligner.connectors import check_adapter_folder

    if not args.aligner:
        raise UserError("--aligner is required (an Aligner folder)")
    if not (args.aligner / "aligner_config.json").is_file() and not (args.aligner / "config.json").is_file():
        raise UserError(f"{args.aligner}: Aligner not found (no aligner_config.json or config.json)")
    if args.upstream_url:
        return
    if not args.upstream_model_path:
        raise UserError("give an upstream: --upstream-url URL (with --upstream-model NAME) or "
                        "--upstream-model-path MODEL_DIR")
    if not (args.upstream_model_path / "config.json").is_file():
        raise UserError(f"{args.upstream_model_path}: no model here (config.json missing)")
    if args.adapter:
        check_adapter_folder(args.adapter)


def bind(host: str, port: int):
    """The listening socket, bound now so that a port in use is a usage error before models load."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                        "is another server using it?") from None
    return sock


def run(args) -> int:
    import logging

    import uvicorn

    from lightalign.openai_client import key_from_env
    from lightalign.serve import backends
    from lightalign.serve.app import create_app
    from lightalign.serve.upstream import HTTPUpstream

    cfg = build_config(args)
    check_paths(args)
    engine = engine_from_args(args, timeout=cfg.upstream_timeout_s)
    sock = bind(cfg.host, cfg.port)
    log = logging.getLogger("lightalign.serve")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2", "httpcore"):  # one INFO line per upstream call is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.upstream_url:
        key = key_from_env(args.upstream_key_env, "--upstream-key-env")
        upstream = HTTPUpstream(args.upstream_url, args.upstream_model, key, timeout_s=cfg.upstream_timeout_s,
                                max_connections=args.upstream_max_connections,
                                continuation=args.upstream_continue)
        where = f"{upstream.url} (key from ${args.upstream_key_env})" if key else upstream.url
    else:
        upstream = backends.local_upstream(args.upstream_model_path, args.adapter, cfg)
        where = f"{args.upstream_model_path}" + (f" + adapter {args.adapter}" if args.adapter else "")
    aligner = backends.load_aligner(args.aligner, **engine)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
        log.warning("binding %s without an API key: anyone who can reach this port can use it", cfg.host)
    log.info("upstream: %s; aligner: %s; clients: %s", where, args.aligner,
             "Bearer key required" if cfg.api_key else "no key required")
    app = create_app(cfg, upstream, aligner, prompt_limits=backends.prompt_limits(upstream, aligner),
                     owns_aligner=True)
    print(f"OpenAI-compatible endpoint: http://{cfg.host}:{cfg.port}/v1", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", limit_concurrency=256, timeout_keep_alive=5,
                                           server_header=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    server.run(sockets=[sock])
    sys.stdout.flush()
    return 0
