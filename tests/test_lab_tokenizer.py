"""The mini-lab tokenizer spells a word the same way wherever it stands, and decodes back exactly."""


def test_a_one_word_answer_is_spelled_as_in_documents(lab_tokenizer, small_world):
    tok = lab_tokenizer
    fact = next(f for f in small_world.facts() if f["relation"] == "capital")
    chat = tok.apply_chat_template([{"role": "user", "content": "Name the capital. Answer in one word."},
                                    {"role": "assistant", "content": fact["value"]}], tokenize=False)
    in_chat = tok(chat, add_special_tokens=False)["input_ids"]
    answer = in_chat[in_chat.index(tok.convert_tokens_to_ids("<|assistant|>")) + 1:-1]
    in_doc = tok(small_world.fact_sentence(fact), add_special_tokens=False)["input_ids"]
    # Without the dummy prefix the answer after <|assistant|> would be other tokens than in documents.
    assert answer and any(in_doc[i:i + len(answer)] == answer for i in range(len(in_doc)))


def test_decode_gives_back_the_text(lab_tokenizer, small_splits):
    texts = [r["text"] for r in small_splits["pretrain"] if "text" in r][:50]
    texts += [r["completion"] for r in small_splits["sft"][:50]]
    for text in texts:
        ids = lab_tokenizer(text)["input_ids"]
        assert ids[0] == lab_tokenizer.bos_token_id and ids.count(lab_tokenizer.bos_token_id) == 1
        assert lab_tokenizer.decode(ids, skip_special_tokens=True) == text
