"""The mini-lab tokenizer: byte-level BPE trained on the lab corpus, with a chat template.

Built like the real ones (Llama-style BOS added by `add_special_tokens=True`, a distinct pad
token, a Jinja chat template with `{% generation %}` marks for assistant-only loss), so that the
gotchas our recipes guard against (double BOS, pad == EOS) exist here too.
"""

from __future__ import annotations

from typing import Iterable

SPECIAL = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE on `texts` and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL.values()) + ROLE_TOKENS
    tok = Tokenizer(models.BPE(unk_token=None))
    # A leading space on every segment (as SentencePiece's dummy prefix does for Llama 2, Mistral,
    # Gemma): without it a word right after <|assistant|> is spelled with other tokens ("17" ->
    # "1" "7") than everywhere else (" 17"), so a one-word answer would need knowledge the base
    # only ever saw in another spelling.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    # ...and decoding drops that one leading space again, as Llama's tokenizer does: decode(encode(x)) == x.
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(SPECIAL["bos_token"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos_token']} $A", pair=f"{SPECIAL['bos_token']} $A $B",
        special_tokens=[(SPECIAL["bos_token"], bos_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=ROLE_TOKENS,
        padding_side="right",
        model_max_length=512,
        **SPECIAL,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
