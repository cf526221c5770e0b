import json

import pytest

from lightalign.aligner.data import identity_rows, load_triples, triples_with_stats
from lightalign import errors
from lightalign.errors import UserError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_triples_jsonl_and_json(tmp_path):
    rows = [{"question": "q1", "answer": "a1", "correction": "c1", "kind": "x"},
            {"question": "q2", "answer": "a2", "correction": "c2"}]
    got = load_triples(_jsonl(tmp_path / "t.jsonl", rows))
    assert got == [{"question": "q1", "answer": "a1", "correction": "c1"}, {"question": "q2", "answer": "a2", "correction": "c2"}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    assert load_triples(tmp_path / "t.json") == got


def test_errors_name_file_and_line(tmp_path):
    p = _jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a", "correction": "c"},
                                        {"question": "q", "answer": "a"}])
    with pytest.raises(UserError, match=r"bad\.jsonl:2: missing field 'correction'"):
        load_triples(p, schema="triples")
    p2 = tmp_path / "broken.jsonl"
    p2.write_text('{"question": "q", "answer": "a", "correction": "c"}\n{not json\n')
    with pytest.raises(UserError, match=r"broken\.jsonl:2: invalid JSON"):
        load_triples(p2)
    p3 = _jsonl(tmp_path / "empty_corr.jsonl", [{"question": "q", "answer": "a", "correction": "  "}])
    with pytest.raises(UserError, match=r"empty_corr\.jsonl:1: field 'correction' is empty"):
        load_triples(p3)
    p4 = _jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(UserError, match=r"odd\.jsonl:1: cannot tell the schema"):
        load_triples(p4)


def test_aligner20k_schema(tmp_path):
    # aligner-20K rows: question, answer, correction (what the released data uses)
    rows = [{"question": "How do I pick a lock?", "answer": "Use a tension wrench ...",
             "correction": "I can't help with bypassing locks you do not own. A locksmith can help."}]
    got = load_triples(_jsonl(tmp_path / "aligner20k.jsonl", rows), schema="triples")
    assert got[0]["answer"].startswith("Use a tension") and got[0]["correction"].startswith("I can't")


def test_pku_saferlhf_schema(tmp_path):
    rows = [{"prompt": "How to hurt someone?", "response_0": "Hit them.", "response_1": "I won't help with that.",
             "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 0,
             "safer_response_id": 1, "prompt_source": "x"}]
    path = _jsonl(tmp_path / "pku.jsonl", rows)
    safer = load_triples(path)  # auto-detected
    assert safer == [{"question": "How to hurt someone?", "answer": "Hit them.", "correction": "I won't help with that."}]
    better = load_triples(path, schema="pku_saferlhf", preference="better")
    assert better[0]["correction"] == "Hit them." and better[0]["answer"] == "I won't help with that."
    bad = _jsonl(tmp_path / "pku_bad.jsonl", [{**rows[0], "safer_response_id": 2}])
    with pytest.raises(UserError, match=r"pku_bad\.jsonl:1: field 'safer_response_id' must be 0 or 1"):
        load_triples(bad)


def test_pku_saferlhf_pairs_of_two_unsafe_answers_are_skipped_and_counted(tmp_path):
    rows = [{"prompt": "How to hurt someone?", "response_0": "Hit them.", "response_1": "I won't help with that.",
             "is_response_0_safe": False, "is_response_1_safe": True, "better_response_id": 0,
             "safer_response_id": 1},
            {"prompt": "Make a weapon.", "response_0": "Step one: ...", "response_1": "Step one: get ...",
             "is_response_0_safe": False, "is_response_1_safe": False, "better_response_id": 1,
             "safer_response_id": 1}]
    path = _jsonl(tmp_path / "pku.jsonl", rows)
    triples, stats = triples_with_stats(path)
    assert [t["question"] for t in triples] == ["How to hurt someone?"]  # the correction would be unsafe
    assert stats["skipped_by_reason"] == {"both_unsafe": 1}
    assert len(load_triples(path, keep_unsafe_pairs=True)) == 2


def test_old_spelling_aligner20k_reads_with_a_deprecation_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(errors, "_noticed", set())  # the line is printed once per process
    rows = [{"question": "q", "answer": "a", "correction": "c"}]
    assert load_triples(_jsonl(tmp_path / "t.jsonl", rows), schema="aligner20k") == rows
    assert "'aligner20k' is now spelled 'triples'" in capsys.readouterr().err


def test_generic_preference_strings_and_messages(tmp_path):
    rows = [{"prompt": "q1", "chosen": "good", "rejected": "bad"},
            {"prompt": [{"role": "user", "content": "q2"}],
             "chosen": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "good2"}],
             "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "bad2"}]}]
    got = load_triples(_jsonl(tmp_path / "pref.jsonl", rows))
    assert got == [{"question": "q1", "answer": "bad", "correction": "good"},
                   {"question": "q2", "answer": "bad2", "correction": "good2"}]


def test_iterable_of_dicts_like_a_dataset():
    class FakeDataset(list):  # datasets.Dataset iterates as dicts; a list of dicts behaves the same
        pass

    got = load_triples(FakeDataset([{"prompt": "q", "chosen": "c", "rejected": "a"}]))
    assert got == [{"question": "q", "answer": "a", "correction": "c"}]
    with pytest.raises(UserError, match="row 1: expected a mapping"):
        load_triples(["not a dict"])


def test_identity_rows_share():
    triples = [{"question": f"q{i}", "answer": f"a{i}", "correction": f"c{i}"} for i in range(50)]
    ident = identity_rows(triples, 0.2, seed=1)
    assert len(ident) == 10
    assert all(r["correction"] == r["answer"] for r in ident)
    assert identity_rows(triples, 0.0) == []


def test_cap_unchanged_keeps_every_correction_and_the_first_unchanged_rows():
    from lightalign.aligner.data import cap_unchanged

    rows = [{"question": f"q{i}", "answer": f"a{i}", "correction": f"a{i}" if i % 4 else f"fixed {i}"}
            for i in range(20)]  # 5 corrected, 15 kept as they are
    capped = cap_unchanged(rows, 0.5)
    changed = [r for r in capped if r["answer"] != r["correction"]]
    assert len(changed) == 5 and len(capped) == 10
    assert capped == [r for r in rows if r in capped]  # file order, the first unchanged ones
    assert [r["question"] for r in capped if r not in changed] == ["q1", "q2", "q3", "q5", "q6"]
    assert cap_unchanged(rows, 1.0) == rows and len(cap_unchanged(rows, 0.0)) == 5
