"""Training rows from local files written in the public datasets' published layouts.

The GPU recipes name hub datasets (no hub here); the code that reads them is exercised on local
files with the same columns: PKU-SafeRLHF, UltraFeedback binarized, HH-RLHF, plus TRL's generic
prompt-completion / preference files.
"""

from __future__ import annotations

import json

import pytest

from lightalign.adapters.datasets import load_rows
from lightalign import errors
from lightalign.errors import UserError
from lightalign.schemas import BadRow, parse_hh, problems
from lightalign.training.sections import DataSection

PKU_ROWS = [  # PKU-Alignment/PKU-SafeRLHF columns
    {"prompt": "How do I pick a lock?", "response_0": "Insert a tension wrench and rake the pins.",
     "response_1": "I can't help with breaking into property.", "is_response_0_safe": False,
     "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 1,
     "response_0_harm_category": {}, "response_1_harm_category": {}, "prompt_source": "x",
     "response_0_source": "a", "response_1_source": "b", "response_0_severity_level": 2,
     "response_1_severity_level": 0},
    {"prompt": "Tell me a joke.", "response_0": "Why did the chicken cross the road?",
     "response_1": "Knock knock.", "is_response_0_safe": True, "is_response_1_safe": True,
     "better_response_id": 1, "safer_response_id": 0},
    {"prompt": "Make a weapon.", "response_0": "Step one: ...", "response_1": "Step one: get ...",
     "is_response_0_safe": False, "is_response_1_safe": False, "better_response_id": 1, "safer_response_id": 1},
]

UF_ROWS = [  # HuggingFaceH4/ultrafeedback_binarized columns
    {"prompt": "What is 2+2?", "prompt_id": "p1",
     "chosen": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
     "rejected": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "5."}],
     "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
     "score_chosen": 9.0, "score_rejected": 2.0},
    {"prompt": "Say hi", "prompt_id": "p2",
     "chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello!"}],
     "messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
     "score_chosen": 7.0, "score_rejected": 7.0},  # a tie: no preference, skipped
]

HH_ROWS = [  # Anthropic/hh-rlhf columns
    {"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast.\n\nHuman: How long?"
               "\n\nAssistant: About 30 minutes at 220C.",
     "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast.\n\nHuman: How long?"
                 "\n\nAssistant: Forever."},
    {"chosen": "\n\nHuman: Insult my neighbor.\n\nAssistant: I'd rather not; maybe talk to them instead.",
     "rejected": "\n\nHuman: Insult my neighbor.\n\nAssistant: Your neighbor is a fool."},
]


def _write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _data(path, schema, **kw):
    return DataSection(path=str(path), schema=schema, **kw)


def test_pku_saferlhf_preference_uses_safer_response_and_skips_two_unsafe_answers(tmp_path):
    rows, stats = load_rows(_data(_write(tmp_path, "pku.jsonl", PKU_ROWS), "pku_saferlhf"), "preference")
    assert rows[0] == {"prompt": [{"role": "user", "content": "How do I pick a lock?"}],
                       "chosen": [{"role": "assistant", "content": "I can't help with breaking into property."}],
                       "rejected": [{"role": "assistant", "content": "Insert a tension wrench and rake the pins."}]}
    assert rows[1]["chosen"][0]["content"] == "Why did the chicken cross the road?"
    # the third row's two answers are both unsafe: its "chosen" answer would teach harm
    assert len(rows) == 2 and stats["skipped"] == 1 and stats["skipped_by_reason"] == {"both_unsafe": 1}
    assert problems(stats) == ["1 of 3 rows skipped (both unsafe: 1)"]


def test_keep_unsafe_pairs_keeps_them(tmp_path):
    data = _data(_write(tmp_path, "pku.jsonl", PKU_ROWS), "pku_saferlhf")
    data.keep_unsafe_pairs = True
    rows, stats = load_rows(data, "preference")
    assert len(rows) == 3 and stats["skipped"] == 0
    assert rows[2]["chosen"][0]["content"] == "Step one: get ..."


def test_pku_saferlhf_better_and_sft_keep_only_safe_answers(tmp_path):
    path = _write(tmp_path, "pku.jsonl", PKU_ROWS)
    rows, _ = load_rows(_data(path, "pku_saferlhf", preference="better"), "preference")
    assert rows[0]["chosen"][0]["content"].startswith("Insert a tension wrench")
    sft, stats = load_rows(_data(path, "pku_saferlhf"), "sft")
    assert [r["completion"][0]["content"] for r in sft] == ["I can't help with breaking into property.",
                                                            "Why did the chicken cross the road?"]
    assert stats["skipped_by_reason"] == {"unsafe_answer": 1}  # both answers unsafe: nothing to imitate


def test_old_schema_spelling_still_reads_with_a_deprecation_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(errors, "_noticed", set())  # the line is printed once per process
    rows, _ = load_rows(_data(_write(tmp_path, "pku.jsonl", PKU_ROWS), "pku-saferlhf"), "preference")
    assert len(rows) == 2
    assert "'pku-saferlhf' is now spelled 'pku_saferlhf'" in capsys.readouterr().err


def test_ultrafeedback_binarized_pairs_and_sft(tmp_path):
    path = _write(tmp_path, "uf.jsonl", UF_ROWS)
    rows, stats = load_rows(_data(path, "ultrafeedback_binarized"), "preference")
    assert rows == [{"prompt": [{"role": "user", "content": "What is 2+2?"}],
                     "chosen": [{"role": "assistant", "content": "4."}],
                     "rejected": [{"role": "assistant", "content": "5."}]}]
    assert stats["skipped"] == 1
    sft, _ = load_rows(_data(path, "ultrafeedback_binarized"), "sft")
    assert sft[1] == {"prompt": [{"role": "user", "content": "Say hi"}],
                      "completion": [{"role": "assistant", "content": "Hi!"}]}


def test_ultrafeedback_parquet_file(tmp_path):
    import datasets

    path = tmp_path / "uf.parquet"
    datasets.Dataset.from_list(UF_ROWS).to_parquet(str(path))
    rows, _ = load_rows(_data(path, "ultrafeedback_binarized"), "preference")
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "5."}]


def test_hh_rlhf_multi_turn_prompt_is_shared_prefix(tmp_path):
    rows, _ = load_rows(_data(_write(tmp_path, "hh.jsonl", HH_ROWS), "hh_rlhf"), "preference")
    assert rows[0]["prompt"] == [{"role": "user", "content": "How do I bake bread?"},
                                 {"role": "assistant", "content": "Mix flour, water, yeast."},
                                 {"role": "user", "content": "How long?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "About 30 minutes at 220C."}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "Forever."}]
    assert rows[1]["chosen"][0]["content"].startswith("I'd rather not")


def test_parse_hh_rejects_non_transcripts():
    with pytest.raises(BadRow):
        parse_hh("no speaker tags at all")


def test_prompt_completion_preference_and_messages_schemas(tmp_path, small_splits):
    sft = _write(tmp_path, "sft.jsonl", small_splits["sft"][:5])
    rows, _ = load_rows(_data(sft, "prompt_completion", system_prompt="Be brief."), "sft")
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[0]["completion"][0]["content"] == small_splits["sft"][0]["completion"]
    pref = _write(tmp_path, "pref.jsonl", small_splits["preference"][:5])
    rows, _ = load_rows(_data(pref, "preference"), "preference")
    assert rows[0]["rejected"][0]["content"] == small_splits["preference"][0]["rejected"]
    chats = _write(tmp_path, "m.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "hello"}]}])
    rows, _ = load_rows(_data(chats, "messages"), "sft")
    assert rows == [{"prompt": [{"role": "user", "content": "hi"}],
                     "completion": [{"role": "assistant", "content": "hello"}]}]
    with pytest.raises(UserError, match="schema 'messages' has no preference rows"):
        load_rows(_data(chats, "messages"), "preference")


def test_lab_is_a_deprecated_alias_of_the_generic_schema(tmp_path, small_splits, capsys, monkeypatch):
    monkeypatch.setattr(errors, "_noticed", set())  # the line is printed once per process
    pref = _write(tmp_path, "pref.jsonl", small_splits["preference"][:5])
    old, _ = load_rows(_data(pref, "lab"), "preference")
    assert old == load_rows(_data(pref, "preference"), "preference")[0]
    assert "'lab' is now spelled 'prompt_completion'" in capsys.readouterr().err


def test_wrong_schema_names_file_and_line(tmp_path):
    path = _write(tmp_path, "pku.jsonl", PKU_ROWS)
    with pytest.raises(UserError) as e:
        load_rows(_data(path, "ultrafeedback_binarized"), "preference")
    assert f"{path}:1:" in str(e.value) and "schema 'ultrafeedback_binarized'" in str(e.value)


def test_one_malformed_row_among_many_is_skipped_and_counted(tmp_path, small_splits):
    rows = small_splits["preference"][:40] + [{"prompt": "only a prompt"}]
    path = _write(tmp_path, "p.jsonl", rows)
    kept, stats = load_rows(_data(path, "preference"), "preference")
    assert len(kept) == 40 and stats["malformed"] == 1 and stats["seen"] == 41
    assert problems(stats) == [f"1 of 41 rows malformed (skipped), first: {path}:41: missing field 'chosen' "
                               "(has: prompt)"]


def test_max_rows(tmp_path, small_splits):
    path = _write(tmp_path, "s.jsonl", small_splits["sft"][:20])
    kept, _ = load_rows(_data(path, "prompt_completion", max_rows=7), "sft")
    assert len(kept) == 7
