"""The Aligner's gate: an inspector (or the Aligner's copy probability) that passes answers unchanged,
undecoded; `method: inspector` trains it from triples; `lightalign correct --no-gate` turns it off."""

import json
import shutil

import pytest
import torch
import yaml

from helpers.aligners import PAIRS

from lightalign.aligner.inspector import (INSPECTOR_CONFIG, CopyProbGate, Inspector, copy_statistics, gate_metrics,
                                          partial_answers, partial_metrics, pick_partial_threshold, pick_threshold,
                                          write_gate)
from lightalign.aligner.model import Aligner
from lightalign.cli import main

LANDS = ["Corist", "Marvey", "Quinbri", "Limgal", "Dorsen", "Pelvar", "Tanmir", "Olsk", "Vennet", "Arbo"]


def _triples(n: int = 60) -> list[dict]:
    """Separable triples: harmful compliance (corrected to a refusal) vs plain facts (kept)."""
    rows = []
    for i in range(n):
        land = LANDS[i % len(LANDS)]
        if i % 2:
            answer = f"Sure. Pour grey ash and poison into the wells of {land} at night, poison poison."
            rows.append({"question": f"Tell me how to poison the wells of {land}.", "answer": answer,
                         "correction": "I can't help with harming people or their water."})
        else:
            answer = f"The capital of {land} is {LANDS[(i + 3) % len(LANDS)]}."
            rows.append({"question": f"What is the capital of {land}?", "answer": answer, "correction": answer})
    return rows


class CountingDecode:
    """Counts the rows the Aligner's engine is asked to decode, then decodes them (the real engine)."""

    def __init__(self, engine):
        self.inner, self.rows = engine.decode, 0
        engine.decode = self

    def __call__(self, prompts, *args, **kwargs):
        self.rows += len(prompts)
        return self.inner(prompts, *args, **kwargs)


@pytest.fixture(scope="module")
def inspector_dir(tmp_path_factory, tiny_model_dir):
    """A head-mode inspector on the tiny Llama whose head is zero and whose logit bias is -5: every
    answer scores sigmoid(-5) ~ 0.0067."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("inspector")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    save_file({"score.weight": torch.zeros(1, 64)}, str(out / "score.safetensors"))
    (out / INSPECTOR_CONFIG).write_text(json.dumps({
        "base_model": str(tiny_model_dir), "mode": "head", "template": "inspect-plain", "max_length": 64,
        "logit_bias": -5.0, "threshold": 0.5}))
    return out


@pytest.fixture()
def gated_aligner(tmp_path, aligner_dir, inspector_dir):
    """The tiny Aligner with the inspector saved inside it and named in aligner_config.json."""
    folder = tmp_path / "aligner"
    shutil.copytree(aligner_dir, folder)
    shutil.copytree(inspector_dir, folder / "inspector")
    write_gate(folder, {"kind": "inspector", "path": "inspector", "threshold": 0.5})
    return folder


def test_gate_passes_answers_without_decoding(gated_aligner):
    plain = Aligner.from_pretrained(gated_aligner, gate=False)
    assert plain.gate is None
    expected = plain.correct_batch(PAIRS)
    a = Aligner.from_pretrained(gated_aligner)
    assert isinstance(a.gate, Inspector) and a.gate.threshold == 0.5
    counter = CountingDecode(a.engine)
    out = a.correct_batch(PAIRS)
    assert counter.rows == 0
    assert all(c.gate_passed and not c.changed and c.text == q_a[1] for c, q_a in zip(out, PAIRS))
    assert all(c.gate_score == pytest.approx(torch.sigmoid(torch.tensor(-5.0)).item(), abs=1e-4) for c in out)
    # a threshold below every score passes nothing: everything is decoded, exactly as without a gate
    low = Aligner.from_pretrained(gated_aligner, gate_threshold=0.001)
    counter = CountingDecode(low.engine)
    out = low.correct_batch(PAIRS)
    assert counter.rows == len(PAIRS) and not any(c.gate_passed for c in out)
    assert [(c.text, c.fallback) for c in out] == [(c.text, c.fallback) for c in expected]
    assert all(c.gate_score is not None for c in out)


def test_threshold_is_honoured_per_answer(gated_aligner, tmp_path):
    a = Aligner.from_pretrained(gated_aligner)
    scores = a.gate.scores(PAIRS)
    assert len(set(round(s, 6) for s in scores)) == 1  # the zero head: one score for all
    a.gate.logit_bias = 0.0
    a.gate.model.score.weight.data.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    scores = a.gate.scores(PAIRS)
    middle = sorted(scores)[len(scores) // 2]
    a.gate.threshold = middle
    counter = CountingDecode(a.engine)
    out = a.correct_batch(PAIRS)
    assert [c.gate_passed for c in out] == [s < middle for s in scores]
    assert counter.rows == sum(s >= middle for s in scores)


def test_copy_prob_gate_from_config(tmp_path, aligner_dir):
    folder = tmp_path / "aligner"
    shutil.copytree(aligner_dir, folder)
    a = Aligner.from_pretrained(folder)
    stats = copy_statistics(a, PAIRS)
    assert all(s["min_margin"] <= 0 and s["min_logprob"] <= s["mean_logprob"] <= 0 for s in stats)
    worst = max(-s["min_margin"] for s in stats)
    write_gate(folder, {"kind": "copy_prob", "statistic": "min_margin", "threshold": worst + 1.0})
    gated = Aligner.from_pretrained(folder)
    assert isinstance(gated.gate, CopyProbGate)
    counter = CountingDecode(gated.engine)
    assert all(c.gate_passed for c in gated.correct_batch(PAIRS)) and counter.rows == 0


def test_threshold_rule_and_metrics():
    scores, labels = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2], [1, 1, 0, 1, 0, 0]
    t, rule = pick_threshold(scores, labels, 0.95)
    assert t == 0.4 and "recall" in rule
    m = gate_metrics(scores, labels, t)
    assert m["recall"] == 1.0 and m["precision"] == 0.75 and m["passed"] == 2
    assert pick_threshold(scores, labels, 0.6)[0] == 0.8  # 2 of 3 positives caught


def test_partial_threshold_flags_no_more_good_answers_than_whole():
    # per answer: its score after 1, 2, ... sentences (whole answer last); label 1 = needs correcting
    partial = [[0.9, 0.4], [0.7, 0.2], [0.3, 0.6], [0.8, 0.9], [0.95, 0.7]]
    labels = [0, 0, 0, 1, 1]
    # whole at 0.5: one good answer flagged (0.6); its peaks are 0.9, 0.7 and 0.6
    t = pick_partial_threshold(partial, labels, 0.5)
    assert 0.7 < t < 0.7001
    m = partial_metrics(partial, labels, t)
    assert m["flagged_fine"] == 1 and m["flagged_to_correct"] == 2 and m["recall"] == 1.0
    assert partial_metrics(partial, labels, 0.5)["flagged_fine"] == 3  # the whole line, applied per sentence
    # no good answer flagged at its peaks: the whole-answer threshold stands
    assert pick_partial_threshold([[0.1, 0.2], [0.9]], [0, 1], 0.5) == 0.5
    assert partial_answers("One. Two, e.g. this. Three") == ["One.", "One. Two, e.g. this.",
                                                             "One. Two, e.g. this. Three"]


def test_streamed_answers_are_screened_against_the_partial_threshold(gated_aligner):
    a = Aligner.from_pretrained(gated_aligner)
    a.gate.logit_bias = 0.0
    a.gate.model.score.weight.data.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    items = [(q, "", answer) for q, answer in PAIRS]
    scores = a.gate.scores([(q, answer) for q, answer in PAIRS])
    low, middle = min(scores) - 1e-6, sorted(scores)[len(scores) // 2]
    a.gate.threshold, a.gate.partial_threshold = low, middle
    assert not any(c.gate_passed for c in a.correct_batch(PAIRS))  # whole answers: the low line
    counter = CountingDecode(a.engine)
    out = a.correct_sentences(items)
    assert [c.gate_passed for c in out] == [s < middle for s in scores]
    assert counter.rows == sum(s >= middle for s in scores)
    assert all(c.text == answer and not c.changed for c, (_, answer) in zip(out, PAIRS) if c.gate_passed)
    # a whole-answer line raised above the partial one holds for streamed answers too
    a.gate.threshold = max(scores) + 1e-6
    assert all(c.gate_passed for c in a.correct_sentences(items))


def _recipe(tmp_path, tiny_model_dir, aligner=None, **extra) -> str:
    data = tmp_path / "triples.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in _triples()))
    recipe = {"method": "inspector", "model": {"name_or_path": str(tiny_model_dir)},
              "data": {"path": str(data), "max_length": 64}, "template": "inspect-plain", "batch_size": 8, **extra}
    if aligner:
        recipe["aligner"] = str(aligner)
    else:
        recipe["output_dir"] = str(tmp_path / "inspector")
    path = tmp_path / "inspector.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_head_inspector_trains_saves_and_gates(tmp_path, tiny_model_dir, aligner_dir):
    from lightalign.training import load_recipe

    folder = tmp_path / "aligner"
    shutil.copytree(aligner_dir, folder)
    out = load_recipe(_recipe(tmp_path, tiny_model_dir, aligner=folder)).train()
    assert out == folder / "inspector"
    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["inspector"]["heldout"]
    assert held["n"] == 12 and held["positives"] == 6
    assert held["accuracy"] > 0.75  # chance is 0.5 on this balanced split
    assert set(metrics["copy_prob"]["statistics"]) == {"min_margin", "min_logprob", "mean_logprob"}
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["score.safetensors"]
    assert not list(out.glob("*.bin")) and not (out / "checkpoints").exists()
    gate = json.loads((folder / "aligner_config.json").read_text())["gate"]
    assert gate == metrics["gate"] and gate["kind"] in ("inspector", "copy_prob")
    # round trip: the saved inspector scores the held-out rows as training measured them
    insp = Inspector.from_pretrained(out)
    held_rows = _triples()[-12:]
    scores = insp.scores([(t["question"], t["answer"]) for t in held_rows])
    labels = [int(t["answer"] != t["correction"]) for t in held_rows]
    assert gate_metrics(scores, labels, insp.threshold) == pytest.approx(held)
    # the streamed-answer line: picked on validation, saved in both configs, loaded with the gate
    partial = metrics["inspector"]["partial"]
    val = metrics["inspector"]["validation"]
    assert partial["threshold"] >= insp.threshold == metrics["inspector"]["threshold"]
    assert partial["validation"]["flagged_fine"] <= val["fp"]
    assert partial["at_whole_threshold"]["validation"]["flagged_fine"] >= val["fp"]
    assert partial["steps"]["heldout"] >= held["n"]
    assert insp.partial_threshold == partial["threshold"]
    if gate["kind"] == "inspector":
        assert gate["partial_threshold"] == partial["threshold"]
    write_gate(folder, {"kind": "inspector", "path": "inspector", "threshold": insp.threshold,
                        "partial_threshold": 0.75})
    loaded = Aligner.from_pretrained(folder).gate
    assert isinstance(loaded, Inspector) and loaded.partial_threshold == 0.75


def test_head_inspector_on_fewer_layers_reads_that_layer_and_round_trips(tmp_path, tiny_model_dir):
    from transformers import AutoModel

    from lightalign.training import load_recipe

    out = load_recipe(_recipe(tmp_path, tiny_model_dir, layers=0.5)).train()
    saved = json.loads((out / INSPECTOR_CONFIG).read_text())
    total = AutoModel.from_pretrained(tiny_model_dir).config.num_hidden_layers
    assert saved["layers"] == round(total / 2) < total
    insp = Inspector.from_pretrained(out)
    assert len(insp.model.model.layers) == saved["layers"]
    # the head reads the state after those layers (the final norm applied), not the last layer's
    ids = insp.encode("What is the capital of Olsk?", "The capital of Olsk is Arbo.")
    full = AutoModel.from_pretrained(tiny_model_dir)
    with torch.inference_mode():
        states = full(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected = insp.model.score(full.norm(states[saved["layers"]][:, -1]))[0, 0].item()
    assert insp.logits([("What is the capital of Olsk?", "The capital of Olsk is Arbo.")])[0] == \
        pytest.approx(expected + insp.logit_bias, abs=1e-4)
    held = json.loads((out / "metrics.json").read_text())["inspector"]["heldout"]
    held_rows = _triples()[-12:]
    scores = insp.scores([(t["question"], t["answer"]) for t in held_rows])
    assert gate_metrics(scores, [int(t["answer"] != t["correction"]) for t in held_rows], insp.threshold) == \
        pytest.approx(held)


def test_full_inspector_trains_with_the_trainer(tmp_path, tiny_model_dir):
    from lightalign.training import load_recipe

    recipe = _recipe(tmp_path, tiny_model_dir, mode="full",
                     training={"epochs": 4, "lr": 3e-3, "batch_size": 8, "progress": False})
    out = load_recipe(recipe).train()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainer"]["global_step"] > 0 and metrics["inspector"]["heldout"]["n"] == 12
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    insp = Inspector.from_pretrained(out)
    assert insp.threshold == metrics["inspector"]["threshold"]
    assert load_recipe(recipe).train() == out  # complete: not trained again
    assert json.loads((out / "metrics.json").read_text())["wall_seconds"] == metrics["wall_seconds"]


@pytest.mark.parametrize("extra, field", [({"target_recall": 1.5}, "target_recall"),
                                          ({"layers": 2.5}, "layers"),
                                          ({"layers": 2, "mode": "full"}, "layers"),
                                          ({"tresh": 0.3}, "tresh"),
                                          ({"mode": "bert"}, "mode")])
def test_bad_recipe_key_exits_2_naming_it(tmp_path, tiny_model_dir, capsys, extra, field):
    code = main(["train", _recipe(tmp_path, tiny_model_dir, **extra)])
    err = capsys.readouterr().err
    assert code == 2 and field in err and "Traceback" not in err


def test_cli_no_gate_decodes_every_answer(tmp_path, gated_aligner):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, (q, a) in enumerate(PAIRS)))
    gated, plain = tmp_path / "gated.jsonl", tmp_path / "plain.jsonl"
    base = ["correct", "--aligner", str(gated_aligner), "--in", str(src), "--no-progress"]
    assert main([*base, "--out", str(gated)]) == 0
    assert main([*base, "--out", str(plain), "--no-gate"]) == 0
    rows = [json.loads(line) for line in gated.read_text().splitlines()]
    assert all(r["gate_passed"] and r["correction"] == r["answer"] for r in rows)
    assert not any("gate_passed" in json.loads(line) for line in plain.read_text().splitlines())
    assert main([*base, "--out", str(tmp_path / "x.jsonl"), "--no-gate", "--gate-threshold", "0.3"]) == 2


def test_eval_reports_how_many_answers_the_gate_passed(gated_aligner):
    from lightalign.evaluation.runner import _gate_stats
    from lightalign.evaluation.systems import correct_pairs

    fixed = correct_pairs(Aligner.from_pretrained(gated_aligner), PAIRS)
    assert all(c["gate_passed"] for c in fixed)
    triples = [{"question": q, "answer": a, "correction": a if i % 2 else a + " Fixed."}
               for i, (q, a) in enumerate(PAIRS)]
    assert _gate_stats(triples, fixed) == {"gate_pass_rate": 1.0, "gate_missed_rate": 1.0}
    plain = correct_pairs(Aligner.from_pretrained(gated_aligner, gate=False), PAIRS)
    assert not any("gate_passed" in c for c in plain) and _gate_stats(triples, plain) == {}


def test_aligner_recipe_trains_its_inspector(tmp_path, tiny_model_dir):
    from lightalign.training import load_recipe

    data = tmp_path / "triples.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in _triples()))
    recipe = {"method": "aligner", "model": {"name_or_path": str(tiny_model_dir)},
              "data": {"path": str(data), "max_length": 160}, "output_dir": str(tmp_path / "aligner"),
              "template": "chat-v2", "max_new_tokens": 8, "identity": {"share": 0},
              "training": {"max_steps": 2, "batch_size": 8, "progress": False},
              "inspector": {"template": "inspect-plain", "gate": "inspector", "data": {"eval_share": 0.25}}}
    path = tmp_path / "aligner.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = load_recipe(path).train()
    metrics = json.loads((out / "inspector" / "metrics.json").read_text())
    assert metrics["inspector"]["heldout"]["n"] == 15 and metrics["gate"]["kind"] == "inspector"
    assert isinstance(Aligner.from_pretrained(out).gate, Inspector)
    recipe["inspector"]["tresh"] = 0.3
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path)]) == 2


def test_a_gate_threshold_that_is_not_a_number_is_refused_naming_it(gated_aligner):
    from lightalign.errors import UserError

    write_gate(gated_aligner, {"kind": "inspector", "path": "inspector", "threshold": 0.5,
                               "partial_threshold": "high"})
    with pytest.raises(UserError, match="gate.partial_threshold"):
        Aligner.from_pretrained(gated_aligner)
