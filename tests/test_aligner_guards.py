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
