"""The launched app through its API (gradio_client), on real tiny models: answers, streaming,
the diff, judges, limits, safe launch settings, and errors that show without taking the app down."""

import threading
import urllib.error
import urllib.request

import pytest

from lightalign.app.config import AppConfig
from helpers.app_lab import ABSTAIN, app_config, expected_answers, launched
from helpers.processes import stop_group

pytestmark = pytest.mark.slow  # launches gradio servers (~30 s for the module)

MAX_NEW = 24
COLUMNS = ("base", "adapter", "aligner", "adapter_aligner")


@pytest.fixture(scope="module")
def case(app_lab, small_splits):
    records = [r for r in small_splits["eval_prompts"] if r["kind"] == "unanswerable"]
    return expected_answers(app_lab, records, MAX_NEW)


@pytest.fixture(scope="module")
def app(app_lab):
    # two generations may run at once through the queue: the model lock must still keep them apart
    cfg = app_config(app_lab, port=0, concurrency_limit=2, max_prompt_chars=500)
    with launched(cfg) as (demo, url, models):
        yield demo, url, models


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def compare_args(prompt, correct_adapter=True):
    return (prompt, MAX_NEW, 0.0, 1.0, 0, correct_adapter)


def test_compare_returns_every_column_diff_and_judges(client, case):
    rec, expected = case
    out = client.predict(*compare_args(rec["prompt"]), api_name="/compare")
    texts, infos = out[:4], out[4:8]
    diff, diff_summary, adapter_diff = out[8], out[9], out[10]
    assert dict(zip(COLUMNS, texts)) == expected
    assert expected["aligner"] == ABSTAIN
    assert "**honest** ✗" in infos[0] and "**honest** ✓" in infos[2] and "**honest** ✓" in infos[3]
    spans = [(d["token"], d["class_or_confidence"]) for d in diff]
    assert "".join(t for t, lab in spans if lab != "-") == expected["aligner"]
    assert " ".join("".join(t for t, lab in spans if lab != "+").split()) == " ".join(expected["base"].split())
    assert {"+", "-"} <= {lab for _, lab in spans}
    assert "added" in diff_summary and "removed" in diff_summary
    assert "".join(d["token"] for d in adapter_diff if d["class_or_confidence"] != "-") == expected["adapter_aligner"]


def test_answers_stream_as_they_generate(client, case):
    rec, expected = case
    job = client.submit(*compare_args(rec["prompt"], correct_adapter=False), api_name="/compare")
    job.result()
    adapter_texts = [o[1] for o in job.outputs()]
    partial = {t for t in adapter_texts if t and t != expected["adapter"]}
    assert partial and all(expected["adapter"].startswith(t) for t in partial)
    assert adapter_texts[-1] == expected["adapter"]
    assert job.outputs()[-1][3] == ""  # the adapter + Aligner column stays empty when switched off


def test_concurrent_requests_do_not_mix_adapter_states(client, case):
    rec, expected = case
    results = {}

    def ask(i):
        results[i] = client.predict(*compare_args(rec["prompt"], correct_adapter=False), api_name="/compare")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3
    for out in results.values():
        assert (out[0], out[1], out[2]) == (expected["base"], expected["adapter"], expected["aligner"])


def test_correct_endpoint_post_edits_any_answer(client, app_lab, small_splits):
    from lightalign.aligner import Aligner

    # The tiny test Aligner was taught on these pairs; an arbitrary hand-written answer may make
    # it loop (and fall back, correctly), which would leave no edit to show in the diff.
    aligner = Aligner.from_pretrained(app_lab / "aligner")
    pairs = [(r["question"], r["answer"]) for r in small_splits["aligner"][:16]]
    found = [(q, a, fix) for q, a in pairs if (fix := aligner.correct(q, a)).changed]
    assert found, "the tiny Aligner changed none of the answers it was trained on"
    question, answer, expected = found[0]
    corrected, diff, summary, _status = client.predict(question, answer, api_name="/correct")
    assert corrected == expected.text
    spans = [(d["token"], d["class_or_confidence"]) for d in diff]
    assert "".join(t for t, lab in spans if lab != "-") == expected.text
    assert " ".join("".join(t for t, lab in spans if lab != "+").split()) == answer
    assert {"+", "-"} <= {lab for _, lab in spans}
    assert "removed" in summary


def test_too_long_prompt_is_refused_clearly_and_the_app_stays_up(client, case):
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"prompt: The prompt is 601 characters long; this app accepts at most 500"):
        client.predict(*compare_args("x" * 601), api_name="/compare")
    with pytest.raises(ValidationError, match=r"Type a prompt first"):
        client.predict(*compare_args("   "), api_name="/compare")
    with pytest.raises(ValidationError, match=r"answer: The answer is 2,001 characters long"):
        client.predict("q", "z" * 2001, api_name="/correct")
    assert client.predict(*compare_args(case[0]["prompt"]), api_name="/compare")[0] == case[1]["base"]


def test_settings_out_of_range_are_refused_with_a_message(client, case):
    from gradio_client.exceptions import ValidationError

    prompt = case[0]["prompt"]
    with pytest.raises(ValidationError, match=r"max_new_tokens: Max new tokens is 100,000; this app allows 1 to 256"):
        client.predict(prompt, 100000, 0.0, 1.0, 0, False, api_name="/compare")
    with pytest.raises(ValidationError, match=r"temperature: Temperature is 5.0; this app allows 0.0 to 2.0"):
        client.predict(prompt, MAX_NEW, 5.0, 1.0, 0, False, api_name="/compare")
    with pytest.raises(ValidationError, match=r"top_p: Top-p must be a number, got 'hot'"):
        client.predict(prompt, MAX_NEW, 0.0, "hot", 0, False, api_name="/compare")
    with pytest.raises(ValidationError, match=r"seed: Seed must be a whole number, got 1.5"):
        client.predict(prompt, MAX_NEW, 0.0, 1.0, 1.5, False, api_name="/compare")
    with pytest.raises(ValidationError, match=r"prompt: The prompt must be text, got int"):
        client.predict(7, MAX_NEW, 0.0, 1.0, 0, False, api_name="/compare")
    assert client.predict(*compare_args(prompt), api_name="/compare")[0] == case[1]["base"]


def test_launch_is_local_private_and_queued(app):
    demo, url, models = app
    assert url.startswith("http://127.0.0.1:")
    assert demo.share is False and demo.share_url is None
    for path in ("/monitoring", "/monitoring/summary"):  # gradio answers 403 "Monitoring is not enabled."
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.rstrip("/") + path, timeout=10)
        assert e.value.code == 403 and b"not enabled" in e.value.read()
    fns = {f.api_name: f for f in demo.fns.values()}
    for name in ("compare", "correct"):  # one pool for every event that runs a model
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == ("model", 2)
    assert demo._queue.max_size == models.cfg.max_queue


def test_missing_adapter_and_failing_aligner_show_in_the_page(app_lab, case, tmp_path):
    from gradio_client import Client

    rec, expected = case
    bad_aligner = tmp_path / "aligner"
    bad_aligner.mkdir()
    (bad_aligner / "config.json").write_text('{"model_type": "llama"}')  # no weights at all
    cfg = app_config(app_lab, port=0, adapter=str(tmp_path / "no_adapter"), aligner=str(bad_aligner))
    with launched(cfg) as (_, url, _models):
        client = Client(url, verbose=False)
        out = client.predict(*compare_args(rec["prompt"]), api_name="/compare")
        assert out[0] == expected["base"] and out[1] == "" and out[2] == ""
        assert "No adapter" in out[5] and str(tmp_path / "no_adapter") in out[5]
        assert "No Aligner" in out[6] and str(bad_aligner) in out[6]
        assert "⚠ **aligner**: not loaded" in out[12]
        assert client.predict(*compare_args(rec["prompt"]), api_name="/compare")[0] == expected["base"]


def test_wrong_base_path_shows_in_the_page(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    cfg = AppConfig(base=str(tmp_path / "missing_base"), port=0)
    with launched(cfg) as (_, url, _models):
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="Base model not loaded: .*missing_base: no such folder"):
            client.predict(*compare_args("Hello"), api_name="/compare")
        with pytest.raises(AppError, match="Base model not loaded"):  # still up, same clear answer
            client.predict(*compare_args("Hello again"), api_name="/compare")


def test_the_lightalign_app_command_serves_the_default_config(app_lab, case, tmp_path):
    """`lightalign app` with no arguments as a user runs it after `lightalign lab`: the default
    config file, its models, URL printed, API answers."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    from gradio_client import Client

    from lightalign.app.config import DEFAULT_CONFIG

    (tmp_path / DEFAULT_CONFIG).parent.mkdir(parents=True)
    shutil.copy(app_lab / "app.yaml", tmp_path / DEFAULT_CONFIG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lightalign", "app", "--port", str(port), "quantization=none"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, lines = time.time() + 120, []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("lightalign app: http"):
                break
        banner = "".join(lines)
        assert f"config: {DEFAULT_CONFIG}" in banner, banner
        assert "judge lab (helpful, harmless, honest)" in banner, banner
        assert f"lightalign app: http://127.0.0.1:{port}/ (this machine only" in banner, banner
        assert "share=True" not in banner  # gradio's own banner (which suggests a share link) is not shown
        out = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            *compare_args(case[0]["prompt"]), api_name="/compare")
        assert (out[0], out[1], out[2]) == (case[1]["base"], case[1]["adapter"], case[1]["aligner"])
        assert "**honest**" in out[4]  # the judge of the config file
    finally:
        stop_group(proc)
