"""Launching a recipe on 2 CPU processes (DDP over gloo) with `accelerate launch`, for the distributed tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DDP_CPU = REPO / "recipes" / "accelerate" / "ddp_cpu.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")
STALL = Path(__file__).with_name("stall_at_step.py")


def write_recipe(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(*args: str) -> list[str]:
    """`accelerate launch` with the 2-process CPU config; `args`: `-m lightalign train ...` or a script."""
    return [str(ACCELERATE), "launch", "--config_file", str(DDP_CPU), "--main_process_port", str(free_port()), *args]


def env() -> dict:
    # one thread per rank: 2 ranks share the 2 cores of a CI runner
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_lightalign(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(launch_command("-m", "lightalign", *args), capture_output=True, text=True, env=env(),
                          timeout=timeout)


def start_stalling(recipe: Path, step: int, flag: Path) -> subprocess.Popen:
    """A 2-process run whose ranks stop after optimizer step `step` (rank 0 then writes `flag`)."""
    return subprocess.Popen(launch_command(str(STALL), str(recipe), str(step), str(flag)), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (the ranks), as a crash or the OOM killer would."""
    import psutil

    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
