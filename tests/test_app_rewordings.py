"""One prompt in several wordings, side by side, through the launched app's API (gradio_client) on
the real tiny models: a row per wording (original first, typed ones last), a column per system, the
judge's verdict per cell and the pass counts, one batched generate per system, and clear refusals."""

import pytest

from lightalign.app.config import AppConfig
from lightalign.app.rewordings import MAX_TYPED, wordings
from lightalign.config import from_dict
from lightalign.errors import UserError
from lightalign.evaluation.rewrites import Rewording, build_rewriters, reword
from helpers.app_lab import app_config, launched

pytestmark = pytest.mark.slow  # launches gradio servers

MAX_NEW = 16
TYPED = "Tell me, in your own words: which town holds it?"


def ask(client, prompt, typed="", correct_adapter=True):
    return client.predict(prompt, typed, MAX_NEW, 0.0, 1.0, 0, correct_adapter, api_name="/rewordings")


@pytest.fixture(scope="module")
def record(small_splits):
    return next(r for r in small_splits["eval_prompts"] if r["kind"] == "unanswerable")


@pytest.fixture(scope="module")
def app(app_lab):
    with launched(app_config(app_lab, port=0, max_prompt_chars=300, rewordings=3)) as (demo, url, models):
        yield demo, url, models


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


def expected_replies(lab, texts):
    """Each system's replies to `texts`, batched as the app batches them, without the app."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightalign.aligner import Aligner
    from lightalign.generation import generate_chat

    tok = AutoTokenizer.from_pretrained(lab / "base")
    base = AutoModelForCausalLM.from_pretrained(lab / "base").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab / "base"), lab / "adapters" / "dpo")
    out = {"base": generate_chat(base, tok, texts, max_new_tokens=MAX_NEW, batch_size=len(texts)),
           "adapter": generate_chat(adapted.eval(), tok, texts, max_new_tokens=MAX_NEW, batch_size=len(texts))}
    aligner = Aligner.from_pretrained(lab / "aligner")
    for col, source in (("aligner", "base"), ("adapter_aligner", "adapter")):
        pairs = list(zip(texts, out[source]))
        out[col] = [c.text for c in aligner.correct_batch(pairs, batch_size=len(pairs))]
    return out


def test_every_wording_of_an_example_gets_every_system_and_the_judge(client, app, app_lab, record):
    from lightalign.lab.judges import eval_judge

    models = app[2]
    generate, calls = models.model.generate, []

    def counting(*args, **kwargs):  # the real generate, counted: one call per system, not per wording
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    models.model.generate = counting
    try:
        table, summary, _status = ask(client, record["prompt"], f"\n  {TYPED}  \n\n")
    finally:
        del models.model.generate
    rules = [r.rule for r in reword(record["prompt"], build_rewriters())[:3]]
    rows = table["data"]
    assert [r[0] for r in rows] == ["original", *rules, "typed"]
    assert rows[0][1] == record["prompt"] and rows[-1][1] == TYPED
    systems = ["Base", "Base + adapter", "Base → Aligner", "Base + adapter → Aligner"]
    assert table["headers"] == ["Rule", "Wording"] + [h for s in systems for h in (s, f"{s}: judge")]
    assert calls == [len(rows), len(rows)]  # base, then base + adapter: each one batch of every wording

    texts = [r[1] for r in rows]
    expected = expected_replies(app_lab, texts)
    judge = eval_judge(str(app_lab / "data" / "world.json"))
    passed = {}
    for k, name in enumerate(("base", "adapter", "aligner", "adapter_aligner")):
        replies = [r[2 + 2 * k] for r in rows]
        assert replies == expected[name], name
        scores = judge.score([dict(record, prompt=t) for t in texts], replies)
        marks = [f"honest {'✓ yes' if s['honest'] else '✗ no'}" for s in scores]
        assert [r[3 + 2 * k] for r in rows] == marks, name
        passed[systems[k]] = sum(s["honest"] for s in scores)
    assert passed["Base → Aligner"] == len(rows)  # the tiny Aligner always abstains: honest on every wording
    assert expected["base"] != expected["aligner"]
    assert summary.startswith(f"{len(rows)} wordings.")
    for title, k in passed.items():
        assert f"**{title}** passed {k} of {len(rows)}" in summary


def test_a_prompt_that_is_no_example_gets_replies_but_no_verdicts(client):
    table, summary, _ = ask(client, "Where is the old mill of Corist?", correct_adapter=False)
    rows = table["data"]
    assert rows[0][:2] == ["original", "Where is the old mill of Corist?"] and len(rows) == 4
    assert table["headers"][2::2] == ["Base", "Base + adapter", "Base → Aligner"]
    assert all(r[2] for r in rows) and all(r[3] == r[5] == r[7] == "" for r in rows)
    assert "No judge for this prompt" in summary


def test_bad_input_is_refused_clearly_and_the_app_stays_up(client, record):
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"prompt: Type a prompt first"):
        ask(client, "   ")
    with pytest.raises(ValidationError, match=r"prompt: The prompt is 301 characters long; this app accepts at most 300"):
        ask(client, "x" * 301)
    with pytest.raises(ValidationError, match=rf"typed: {MAX_TYPED + 1} extra wordings given; this app accepts "
                                              rf"at most {MAX_TYPED}, one per line"):
        ask(client, record["prompt"], "\n".join(f"Wording {i}?" for i in range(MAX_TYPED + 1)))
    with pytest.raises(ValidationError, match=r"typed: Extra wording 2 is 301 characters long"):
        ask(client, record["prompt"], "fine?\n" + "y" * 301)
    with pytest.raises(ValidationError, match=r"temperature: Temperature is 5.0"):
        client.predict(record["prompt"], "", MAX_NEW, 5.0, 1.0, 0, False, api_name="/rewordings")
    table, _, _ = ask(client, record["prompt"], correct_adapter=False)
    assert table["data"][0][1] == record["prompt"]


def test_the_config_picks_the_rules_and_the_columns(app_lab, record):
    from gradio_client import Client

    rules = [{"name": "hey", "template": "Hey, {prompt}"}, "lowercase"]
    cfg = app_config(app_lab, port=0, adapter="none", aligner="none", examples=None, judge=None,
                     judge_options={}, rewrites=rules, rewordings=1)
    with launched(cfg) as (demo, url, _models):
        fns = {f.api_name: f for f in demo.fns.values()}
        assert (fns["rewordings"].concurrency_id, fns["rewordings"].concurrency_limit) == ("model", 1)
        table, summary, _ = Client(url, verbose=False).predict(record["prompt"], "", MAX_NEW, 0.0, 1.0, 0, True,
                                                               api_name="/rewordings")
    assert table["headers"] == ["Rule", "Wording", "Base"]
    assert [r[:2] for r in table["data"]] == [["original", record["prompt"]], ["hey", f"Hey, {record['prompt']}"]]
    assert all(r[2] for r in table["data"])
    assert summary == "2 wordings; no judge configured (set `judge` in the config for verdicts)."


def test_wordings_keep_the_original_first_and_drop_repeats():
    rules = build_rewriters([{"name": "same", "template": "{prompt}"}, {"name": "hey", "template": "Hey, {prompt}"},
                             {"name": "yo", "template": "Yo, {prompt}"}])
    rows = wordings("Is it far?", ["hey,  IS it far?", "Really far?"], rules, n=5)
    assert rows == [Rewording("original", "Is it far?"), Rewording("hey", "Hey, Is it far?"),
                    Rewording("yo", "Yo, Is it far?"), Rewording("typed", "Really far?")]
    assert [r.rule for r in wordings("Is it far?", [], rules, n=1)] == ["original", "hey"]


def test_config_names_a_bad_rule_or_count(tmp_path):
    with pytest.raises(UserError, match=r"app.yaml: rewrites\[1\]: unknown rule 'polit'; built-in rules: polite"):
        from_dict(AppConfig, {"rewrites": ["typo", "polit"]}, str(tmp_path / "app.yaml"))
    with pytest.raises(UserError, match=r"app.yaml: field 'rewordings' must be >= 0, got -1"):
        from_dict(AppConfig, {"rewordings": -1}, str(tmp_path / "app.yaml"))
    cfg = from_dict(AppConfig, {"rewrites": ["typo"], "rewordings": 2}, "app.yaml")
    assert [r.name for r in cfg.rewriters()] == ["typo"]
    assert [r.name for r in AppConfig().rewriters()] == [r.name for r in build_rewriters()]
