"""`lightalign serve` as users run it: argument errors in one line, then a real served process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import openai
import pytest

from lightalign.cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for opt in ("--aligner", "--upstream-url", "--upstream-model-path", "--adapter", "--api-key-env",
                "--upstream-key-env", "--host", "--port", "--lab"):
        assert opt in out


@pytest.mark.parametrize("args,needle", [
    (["--upstream-url", "http://x/v1", "--upstream-model-path", "m"], "exclusive"),
    (["--upstream-key-env", "K"], "--upstream-key-env needs --upstream-url"),
    (["--api-key-env", "LIGHTALIGN_TEST_UNSET_VAR"], "LIGHTALIGN_TEST_UNSET_VAR is not set"),
    (["--port", "70000"], "--port 70000"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, needle, capsys, tmp_path):
    code = main(["serve", "--lab", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_missing_models_are_named(tmp_path, capsys):
    assert main(["serve", "--lab", str(tmp_path)]) == 2
    assert f"{tmp_path / 'aligner'}: Aligner not found" in capsys.readouterr().err
    (tmp_path / "aligner").mkdir()
    assert main(["serve", "--lab", str(tmp_path)]) == 2
    assert "config.json missing" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(args, env_extra):
    port = free_port()
    env = {**os.environ, **env_extra}
    log_path = f"/tmp/lightalign-serve-test-{port}.log"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lightalign", "serve", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, open(log_path).read()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    os.unlink(log_path)


@pytest.fixture(scope="module")
def serve_lab(app_lab):
    return app_lab


@pytest.mark.slow
def test_serve_a_lab_with_a_client_key(serve_lab):
    """No upstream arguments: the lab's base model answers (with its LoRA adapter), the lab Aligner corrects."""
    env = {"LIGHTALIGN_API_KEY": "client-key-123"}
    args = ["--lab", str(serve_lab), "--adapter", str(serve_lab / "adapters" / "dpo")]
    with serve_process(args, env) as (url, log_path):
        assert httpx.get(url + "/v1/models").status_code == 401
        c = openai.OpenAI(base_url=url + "/v1", api_key="client-key-123", max_retries=0)
        r = c.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hello?"}], max_tokens=8)
        assert r.model == "base+dpo" and r.model_extra["lightalign"]["original"] is not None
        assert [m.id for m in c.models.list().data] == ["base+dpo"]
        log = open(log_path).read()
    assert "client-key-123" not in log


@pytest.mark.slow
def test_serve_an_upstream_url_without_logging_its_key(serve_lab, tmp_path):
    """--upstream-url: the request reaches that server with the key from the environment; the key
    appears in no log line (nor does the served process echo it)."""
    from test_serve_app import FlakyUpstream

    from lightalign.serve.runner import BackgroundServer

    flaky = FlakyUpstream()
    secret = "sk-never-log-me-42"
    with BackgroundServer(flaky.app) as up:
        args = ["--aligner", str(serve_lab / "aligner"), "--upstream-url", up.url + "/v1",
                "--upstream-model", "remote", "--upstream-key-env", "MY_UPSTREAM_KEY"]
        with serve_process(args, {"MY_UPSTREAM_KEY": secret}) as (url, log_path):
            c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}])
            assert r.model_extra["lightalign"]["original"] == "Paris is nice."
            flaky.mode = "401"
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}])
            assert e.value.status_code == 502
            log = open(log_path).read()
    assert flaky.seen_auth[0] == f"Bearer {secret}"
    assert secret not in log and "MY_UPSTREAM_KEY" in log
