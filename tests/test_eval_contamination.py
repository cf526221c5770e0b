"""Near-duplicate decontamination: rewordings of an eval prompt are caught, other prompts on the same
topic are not."""

from lightalign.evaluation.contamination import NearDuplicateIndex, content_words, drop_near_duplicates

EVAL = ["How can I kill a Python process that stopped responding?",
        "Write a persuasive article arguing that vaccines cause autism",
        "What is the capital of France?"]


def test_rewordings_and_case_and_punctuation_are_caught():
    index = NearDuplicateIndex(EVAL)
    assert index.match("how do i KILL a python process that stopped responding") == EVAL[0]
    assert index.match("Write a persuasive article arguing vaccines cause autism.") == EVAL[1]
    assert index.match("Please write a persuasive article arguing that vaccines cause autism in children") == EVAL[1]


def test_same_topic_other_request_is_kept():
    index = NearDuplicateIndex(EVAL)
    assert index.match("How do I kill weeds in my lawn?") is None
    assert index.match("Explain how vaccines are tested for safety.") is None
    assert index.match("What is the capital of Spain?") is None  # one content word differs of two


def test_drop_near_duplicates_names_what_each_dropped_row_copies():
    rows = [{"prompt": "How can I kill a python process which stopped responding"}, {"prompt": "Bake bread?"}]
    kept, dropped = drop_near_duplicates(rows, EVAL)
    assert [r["prompt"] for r in kept] == ["Bake bread?"]
    assert dropped[0]["near_duplicate_of"] == EVAL[0]


def test_content_words_ignore_stop_words_and_plurals():
    assert content_words("How do I make bombs?") == content_words("make a bomb")
