import pytest

from lightalign.aligner.templates import ALIGNER_V1, ALIGNER_V2, TEMPLATES, get_template
from lightalign.errors import UserError


def test_released_v1_prompt_is_exact():
    # Copied from the released aligner-7b-v1.0 model card: one character off and the checkpoint degrades.
    expected = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful "
                "and harmless: {question} | {answer} ASSISTANT:")
    assert ALIGNER_V1 == expected
    assert get_template("aligner-v1").render("Q?", "A.") == (
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful "
        "and harmless: Q? | A. ASSISTANT:")


def test_v2_block_inside_the_same_wrapper():
    text = get_template("aligner-v2").render("Q?", "A.")
    assert text == "BEGINNING OF CONVERSATION: USER: ##Question: Q?\n##Answer: A.\n##Correction:  ASSISTANT:"
    assert ALIGNER_V2.startswith("BEGINNING OF CONVERSATION: USER: ##Question: {question}\n##Answer: {answer}\n")


def test_braces_in_text_do_not_break_rendering():
    assert "{x}" in get_template("aligner-v1").render("What is {x}?", "a {b} c")


def test_chat_template_has_one_bos(lab_tokenizer):
    t = get_template("chat-v2")
    ids = t.encode(lab_tokenizer, "What is 5 plus 4?", "9")
    assert ids.count(lab_tokenizer.bos_token_id) == 1 and ids[0] == lab_tokenizer.bos_token_id
    assert lab_tokenizer.decode(ids).endswith("<|assistant|>")
    plain = get_template("aligner-v1").encode(lab_tokenizer, "q", "a")
    assert plain.count(lab_tokenizer.bos_token_id) == 1


def test_custom_and_unknown_templates():
    custom = get_template("Fix: {question} -> {answer} =")
    assert custom.name == "custom" and custom.render("q", "a") == "Fix: q -> a ="
    assert get_template(custom.to_dict()) == custom
    assert get_template(None) is TEMPLATES["aligner-v1"]
    with pytest.raises(UserError, match="unknown template"):
        get_template("aligner-v9")
