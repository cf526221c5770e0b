"""`lightalign serve` as users run it: argument errors in one line, then a real served process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from helpers.processes import free_port, serve_process, stop_group

from lightalign.cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for opt in ("--aligner", "--upstream-url", "--upstream-model-path", "--upstream-adapter", "--api-key-env",
                "--upstream-key-env", "--upstream-model", "--host", "--port"):
        assert opt in out
    assert "--lab" not in out and "minilab" not in out  # the server knows nothing of the mini-lab


@pytest.mark.parametrize("args,needle", [
    (["--upstream-url", "http://x/v1", "--upstream-model-path", "m"], "exclusive"),
    (["--upstream-key-env", "K"], "--upstream-key-env needs --upstream-url"),
    (["--api-key-env", "LIGHTALIGN_TEST_UNSET_VAR"], "LIGHTALIGN_TEST_UNSET_VAR is not set"),
    (["--port", "70000"], "--port 70000"),
    (["--upstream-model", "m"], "--upstream-model is the model name sent to --upstream-url"),
    (["--upstream-url", "http://user:pw@127.0.0.1:1/v1", "--aligner", "."], "credentials in the URL are refused"),
    (["--upstream-url", "http://[::1", "--aligner", "."], "not a valid URL (Invalid IPv6 URL)"),
    (["--upstream-url", "http://h:99999/v1", "--aligner", "."], "not a valid URL (Port out of range"),
    (["--max-wait-ms", "nan"], "max_wait_ms must be >= 0"),
    (["--upstream-timeout", "inf"], "upstream_timeout_s > 0"),
])
def test_bad_arguments_give_one_line_and_exit_2(args, needle, capsys, tmp_path):
    code = main(["serve", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def _fake_models(tmp_path):
    """Folders that pass the path checks (nothing is loaded before the checks fail)."""
    for name, marker in (("aligner", "aligner_config.json"), ("base", "config.json"), ("lora", "adapter_config.json")):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / marker).write_text("{}")
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(b"")
    return tmp_path / "aligner", tmp_path / "base", tmp_path / "lora"


def test_missing_models_are_named(tmp_path, capsys):
    aligner, base, lora = _fake_models(tmp_path)
    cases = [([], "--aligner is required"),
             (["--aligner", str(tmp_path / "nope")], "Aligner not found"),
             (["--aligner", str(aligner)], "give an upstream"),
             (["--aligner", str(aligner), "--upstream-model-path", str(tmp_path)], "config.json missing"),
             # an Aligner passed as the upstream's LoRA adapter: one line, before anything loads
             (["--aligner", str(aligner), "--upstream-model-path", str(base), "--adapter", str(aligner)],
              "this is an Aligner, not a LoRA adapter")]
    for args, needle in cases:
        assert main(["serve", *args]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_port_in_use_exits_2_before_loading_models(tmp_path, capsys, monkeypatch):
    from lightalign.serve import backends

    aligner, base, lora = _fake_models(tmp_path)
    loaded = []
    monkeypatch.setattr(backends, "load_aligner", lambda *a: loaded.append(a))
    monkeypatch.setattr(backends, "local_upstream", lambda *a: loaded.append(a))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["serve", "--aligner", str(aligner), "--upstream-model-path", str(base), "--adapter", str(lora),
                     "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"--port {port}: cannot listen there" in err and loaded == []


@pytest.fixture(scope="module")
def serve_lab(app_lab):
    return app_lab


@pytest.mark.slow
def test_serve_a_lab_with_a_client_key(serve_lab):
    """A local upstream model with its LoRA adapter answers, the Aligner corrects; clients need the key."""
    env = {"LIGHTALIGN_API_KEY": "client-key-123"}
    args = ["--aligner", str(serve_lab / "aligner"), "--upstream-model-path", str(serve_lab / "base"),
            "--adapter", str(serve_lab / "adapters" / "dpo")]
    with serve_process(args, env) as (url, log_path):
        assert httpx.get(url + "/v1/models").status_code == 401
        c = openai.OpenAI(base_url=url + "/v1", api_key="client-key-123", max_retries=0)
        r = c.chat.completions.create(model="base+dpo", messages=[{"role": "user", "content": "Hello?"}],
                                      max_tokens=8)
        assert r.model == "base+dpo" and r.model_extra["lightalign"]["original"] is not None
        assert [m.id for m in c.models.list().data] == ["base+dpo"]
        log = open(log_path).read()
    assert "client-key-123" not in log


@pytest.mark.slow
def test_serve_an_upstream_url_without_logging_its_key(serve_lab, tmp_path):
    """--upstream-url: the request reaches that server with the key from the environment; the key
    appears in no log line (nor does the served process echo it)."""
    from helpers.flaky_upstream import FlakyUpstream

    from lightalign.serve.runner import BackgroundServer

    flaky = FlakyUpstream()
    secret = "sk-never-log-me-42"
    with BackgroundServer(flaky.app) as up:
        args = ["--aligner", str(serve_lab / "aligner"), "--upstream-url", up.url + "/v1",
                "--upstream-model", "remote", "--upstream-key-env", "MY_UPSTREAM_KEY"]
        with serve_process(args, {"MY_UPSTREAM_KEY": secret}) as (url, log_path):
            c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            r = c.chat.completions.create(model="remote", messages=[{"role": "user", "content": "Hi"}])
            assert r.model_extra["lightalign"]["original"] == "Paris is nice."
            flaky.mode = "401"
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="remote", messages=[{"role": "user", "content": "Hi"}])
            assert e.value.status_code == 502
            log = open(log_path).read()
    assert flaky.seen_auth[0] == f"Bearer {secret}"
    assert secret not in log and "MY_UPSTREAM_KEY" in log


@pytest.mark.slow
def test_sigterm_drains_and_exits_while_a_request_hangs(serve_lab):
    """An upstream that never answers holds a request; SIGTERM still ends the server promptly, exit 0."""
    import threading

    from helpers.flaky_upstream import FlakyUpstream

    from lightalign.serve.runner import BackgroundServer

    flaky = FlakyUpstream()
    flaky.mode = "hang"
    port = free_port()
    with BackgroundServer(flaky.app) as up:
        proc = subprocess.Popen([sys.executable, "-m", "lightalign", "serve", "--port", str(port),
                                 "--aligner", str(serve_lab / "aligner"), "--upstream-url", up.url,
                                 "--upstream-model", "remote"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.3)
            body = {"model": "remote", "messages": [{"role": "user", "content": "Hi"}]}

            def hang():
                try:
                    httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
                except httpx.HTTPError:  # the server went away mid-request: expected here
                    pass

            hung = threading.Thread(target=hang, daemon=True)
            hung.start()
            while not flaky.seen_auth:  # the request is in flight upstream
                time.sleep(0.05)
            proc.terminate()
            # ends within the grace period (uvicorn re-raises the signal: status -SIGTERM), where it
            # used to wait for the upstream's 120 s timeout
            assert proc.wait(timeout=30) in (0, -15)
        finally:
            stop_group(proc, grace=0)
