"""Word diff of an answer and its correction, as HighlightedText spans."""

from lightalign.app.diff import summarize, word_diff


def _after(spans):
    return "".join(t for t, lab in spans if lab != "-")


def _before(spans):
    return "".join(t for t, lab in spans if lab != "+")


def test_unchanged_answer_has_no_marks():
    spans = word_diff("The capital is Ulmbel.", "The capital is Ulmbel.")
    assert spans == [("The capital is Ulmbel.", None)]
    assert summarize(spans) == "The Aligner left the answer unchanged."


def test_replaced_word_is_marked_removed_then_added():
    spans = word_diff("The capital is Lanfen.", "The capital is Ulmbel.")
    assert spans == [("The capital is ", None), ("Lanfen. ", "-"), ("Ulmbel.", "+")]
    assert _after(spans) == "The capital is Ulmbel."
    assert summarize(spans) == "The Aligner added 1 word and removed 1 word."


def test_deleted_padding_and_inserted_words_keep_both_texts():
    before = "Well, that is a good question. 5 plus 1 is 6. I hope this helps you."
    after = "5 plus 1 is 6."
    spans = word_diff(before, after)
    assert _after(spans) == after
    assert " ".join(_before(spans).split()) == before
    assert {lab for _, lab in spans} == {None, "-"}
    assert word_diff("", "I do not know.") == [("I do not know.", "+")]
    assert word_diff("Sure. Here is how:", "") == [("Sure. Here is how:", "-")]


def test_spacing_does_not_count_as_a_change():
    assert word_diff("a  b\nc", "a b c") == [("a b c", None)]
