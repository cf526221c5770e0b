"""The Aligner on vLLM: the in-process vLLM engine writes the native decoder's corrections through the same
templates, guards and resumable `correct` output, and a remote Aligner behind `vllm serve` decodes its
tokens one for one.

vLLM pins versions of torch and transformers of its own, so it lives in a second venv (`make vllm-env`);
`make test` names its python in LIGHTALIGN_VLLM_PYTHON. The model is a small random Llama with peaked
logits (initializer_range 0.3: greedy picks are far from ties, so equal arithmetic gives equal tokens),
head_dim 32 (vLLM's CPU attention has no kernel for 16), and one extra EOS id taken from its own output
so that some rows stop at EOS and others at the token limit.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from helpers import processes
from helpers.processes import serve_process, vllm_server

VLLM_PYTHON = os.environ.get("LIGHTALIGN_VLLM_PYTHON")
pytestmark = [pytest.mark.vllm, pytest.mark.slow,
              pytest.mark.skipif(not VLLM_PYTHON, reason="LIGHTALIGN_VLLM_PYTHON unset (`make test` sets it)")]
LIMIT = 20


@pytest.fixture(scope="module")
def pairs(small_splits):
    return [(r["question"], r["answer"]) for r in small_splits["aligner_eval"][:40]]


@pytest.fixture(scope="module")
def aligner_dir(tmp_path_factory, lab_tokenizer, pairs):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from lightalign.aligner import Aligner

    torch.manual_seed(0)
    tok = lab_tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    aligner = Aligner(LlamaForCausalLM(cfg), tok, template="chat-answer-first", max_new_tokens=LIMIT)
    # an EOS the model writes part-way through some corrections, never as their first token
    outs = _native(aligner, pairs)
    counts: dict[int, int] = {}
    for o in outs:
        for t in set(o.tokens[3:LIMIT - 2]) - set(o.tokens[:3]):
            counts[t] = counts.get(t, 0) + 1
    stop = min((t for t in counts if 0.2 * len(outs) <= counts[t] <= 0.8 * len(outs)), default=None,
               key=lambda t: abs(counts[t] - len(outs) / 2))
    assert stop is not None, "no token stops some rows and not others"
    aligner.model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, stop],
                                                       pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("vllm_aligner")
    aligner.save_pretrained(out)
    return out


def _native(aligner, pairs):
    items = [aligner._prepare(p) for p in pairs]
    aligner.engine.start()
    return aligner.engine.decode([it[0] for it in items], [it[1] for it in items], [LIMIT] * len(items))


def test_correct_on_vllm_resumes_a_file_and_matches_native(aligner_dir, pairs, tmp_path):
    """The in-process vLLM engine (one engine start serves the whole file) writes the native decoder's
    corrections, finished and truncated alike; the remote test below compares raw tokens."""
    from lightalign.aligner import Aligner

    records = [{"id": i, "question": q, "answer": a} for i, (q, a) in enumerate(pairs)]
    src = tmp_path / "answers.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    native = Aligner.from_pretrained(aligner_dir, device="cpu").correct_batch(pairs)
    assert 0 < sum(c.fallback == "truncated" for c in native) < len(native)  # both kinds of ending compared
    done = [{**records[i], "correction": native[i].text, "changed": native[i].changed,
             "fallback": native[i].fallback} for i in range(5)]
    out = tmp_path / "corrected.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in done))  # an interrupted run wrote 5 records
    run = processes.run([VLLM_PYTHON, "-m", "lightalign", "correct", "--aligner", str(aligner_dir), "--engine",
                          "vllm", "--in", str(src), "--out", str(out), "--no-progress"],
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"resuming: 5 records already in {out}, {len(pairs) - 5} to go" in run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[:5] == done and sorted(r["id"] for r in rows) == list(range(len(pairs)))
    by_id = {r["id"]: r for r in rows}
    assert [(by_id[i]["correction"], by_id[i]["fallback"]) for i in range(len(pairs))] == \
        [(c.text, c.fallback) for c in native]


def test_remote_aligner_behind_vllm_serve(aligner_dir, pairs, tmp_path):
    """`--aligner-url`: the rendered prompt goes to vllm serve's /v1/completions; corrections equal the
    native ones, in the library, in `correct`, and through `lightalign serve` as a stateless proxy."""
    import openai

    from helpers.flaky_upstream import FlakyUpstream

    from lightalign.aligner import Aligner
    from lightalign.serve.runner import BackgroundServer

    native = Aligner.from_pretrained(aligner_dir, device="cpu")
    expected = native.correct_batch(pairs)
    with vllm_server(VLLM_PYTHON, aligner_dir) as url:
        remote = Aligner.from_pretrained(aligner_dir, engine="remote", engine_options={"url": url})
        assert remote.model is None  # the proxy holds no weights
        got = remote.correct_batch(pairs)
        assert [(c.text, c.fallback) for c in got] == [(c.text, c.fallback) for c in expected]
        items = [native._prepare(p) for p in pairs]
        raw = remote.engine.decode([it[0] for it in items], [it[1] for it in items], [LIMIT] * len(items))
        assert [(o.tokens, o.finished) for o in raw] == [(o.tokens, o.finished) for o in _native(native, pairs)]

        src = tmp_path / "answers.jsonl"
        src.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs[:6]))
        run = processes.run([sys.executable, "-m", "lightalign", "correct", "--aligner", str(aligner_dir),
                              "--aligner-url", url, "--in", str(src), "--out", "-", "--no-progress"],
                             timeout=300)
        assert run.returncode == 0, run.stderr[-4000:]
        assert [json.loads(line)["correction"] for line in run.stdout.splitlines()] == \
            [c.text for c in expected[:6]]

        upstream = FlakyUpstream()  # answers every question with the same text
        with BackgroundServer(upstream.app) as up:
            args = ["--aligner", str(aligner_dir), "--aligner-url", url, "--upstream-url", up.url + "/v1",
                    "--upstream-model", "remote"]
            with serve_process(args, {}) as (proxy, _):
                c = openai.OpenAI(base_url=proxy + "/v1", api_key="unused", max_retries=0)
                question = pairs[0][0]
                r = c.chat.completions.create(model="remote", messages=[{"role": "user", "content": question}])
    original = r.model_extra["lightalign"]["original"]
    assert r.choices[0].message.content == native.correct(question, original).text


def test_serve_on_the_vllm_engine(aligner_dir, pairs):
    """`lightalign serve --engine vllm`: the endpoint's correction equals the native one."""
    import openai

    from helpers.flaky_upstream import FlakyUpstream

    from lightalign.aligner import Aligner
    from lightalign.serve.runner import BackgroundServer

    upstream = FlakyUpstream()
    with BackgroundServer(upstream.app) as up:
        args = ["--aligner", str(aligner_dir), "--engine", "vllm", "--upstream-url", up.url + "/v1",
                "--upstream-model", "remote"]
        with serve_process(args, {}, python=VLLM_PYTHON, timeout=400) as (proxy, _):
            c = openai.OpenAI(base_url=proxy + "/v1", api_key="unused", max_retries=0)
            question = pairs[3][0]
            r = c.chat.completions.create(model="remote", messages=[{"role": "user", "content": question}])
    original = r.model_extra["lightalign"]["original"]
    native = Aligner.from_pretrained(aligner_dir, device="cpu")
    assert r.choices[0].message.content == native.correct(question, original).text


@pytest.mark.parametrize("option, needle", [("bogus=1", "engine option 'bogus': not an argument of vllm.LLM"),
                                            ("max_model_len=abc", "vLLM could not start the Aligner")])
def test_bad_engine_options_get_one_line_and_exit_2(aligner_dir, tmp_path, option, needle):
    src = tmp_path / "answers.jsonl"
    src.write_text(json.dumps({"question": "Hi?", "answer": "Hello."}) + "\n")
    run = processes.run([VLLM_PYTHON, "-m", "lightalign", "correct", "--aligner", str(aligner_dir), "--engine", "vllm",
                          "--engine-option", option, "--in", str(src), "--out", str(tmp_path / "out.jsonl")],
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "out.jsonl").exists()
