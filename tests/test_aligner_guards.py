from lightalign.aligner.guards import fallback_reason, is_degenerate


def test_good_correction_passes():
    assert fallback_reason("I can not help with that.", "Sure. Pour ash.", finished=True) is None


def test_empty_truncated_degenerate():
    assert fallback_reason("   ", "answer", True) == "empty"
    assert fallback_reason("The capital of Velyar is", "answer", False) == "truncated"
    loop = "The capital is Lanlan. " + "and then " * 8
    assert fallback_reason(loop, "The capital is Lanlan.", False) == "degenerate"
    assert is_degenerate("no no no no no no no", "")
    assert is_degenerate("ha" * 20, "")
    assert is_degenerate("I will help. I will help. I will help. I will help.", "")


def test_repetition_that_the_answer_has_is_not_a_loop():
    original = "Row, row, row, row, row, row your boat."
    assert not is_degenerate(original, original)
    assert not is_degenerate("I can not help with that. I can not help with that.", "")
    assert not is_degenerate("9 plus 9 is 18.", "9 plus 9 is 19.")


def test_a_correction_that_runs_into_its_prompt_markers_is_cut_there():
    from lightalign.aligner.guards import cut_at_markers
    from lightalign.aligner.templates import get_template

    markers = get_template("chat-answer-first").markers
    assert markers == ["##Answer:", "##Question:"]
    # a real-track Aligner copying a cut-off answer, then echoing the question line of its prompt
    text = "To delete logs, use:\n\n```sql\nDELETE FROM (\n##Question: Give instructions for deleting logs"
    assert cut_at_markers(text, "To delete logs, use:", markers) == "To delete logs, use:\n\n```sql\nDELETE FROM ("
    assert cut_at_markers("I can't help with that.", "Sure.", markers) == "I can't help with that."
    quoted = "Write '##Answer:' before each answer."  # the answer itself holds the marker: kept
    assert cut_at_markers(quoted, quoted, markers) == quoted
