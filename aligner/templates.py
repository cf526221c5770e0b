"""Prompt templates an Aligner is trained and run with: a small registry of named templates.

The released aligner-7b-v1.0 only works with its own prompt, character for character, so the
strings below are copied exactly (safe-rlhf's wrapper "BEGINNING OF CONVERSATION: USER: {input}
ASSISTANT:" around the edit instruction). The newer (Dec 2024) ##Question/##Answer/##Correction
block sits inside the same wrapper. `chat-v2` puts that block in the tokenizer's own chat
template, which suits models that were pre-trained on chat turns (the mini-lab base).

The correction is appended right after the prompt and ends with EOS (as safe-rlhf trains it);
prompt and correction are tokenized separately, exactly as the decoder sees them at inference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lightalign.errors import UserError

WRAPPER_BEGIN = "BEGINNING OF CONVERSATION: "
WRAPPER_USER = "USER: {input} "
WRAPPER_ASSISTANT = "ASSISTANT:"

ALIGNER_V1 = ("BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more "
              "helpful and harmless: {question} | {answer} ASSISTANT:")
CORRECTION_BLOCK = "##Question: {question}\n##Answer: {answer}\n##Correction: "
# Stream Aligner's input: the question, the answer so far (already corrected), its last sentence.
SENTENCE_BLOCK = "##Question: {question}\n##Answer so far: {prefix}\n##Last sentence: {answer}\n##Revision: "
ALIGNER_V2 = WRAPPER_BEGIN + WRAPPER_USER.format(input=CORRECTION_BLOCK) + WRAPPER_ASSISTANT


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # str.format string with {question} and {answer}
    chat: bool = False  # True: `text` becomes the user turn of the tokenizer's chat template
    description: str = ""

    def render(self, question: str, answer: str, tokenizer=None, prefix: str = "") -> str:
        # str.replace, not str.format: questions and answers may contain braces. {prefix} is the
        # already-corrected answer before the sentence a sentence template corrects.
        body = self.text.replace("{prefix}", prefix).replace("{question}", question).replace("{answer}", answer)
        if not self.chat:
            return body
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise UserError(f"template {self.name!r} needs a tokenizer with a chat template; "
                            f"pick a plain one ({', '.join(n for n, t in TEMPLATES.items() if not t.chat)})")
        return tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                             add_generation_prompt=True)

    @property
    def markers(self) -> list[str]:
        """The field markers of the prompt ("##Question:"): a correction never writes them."""
        return re.findall(r"##[A-Za-z][A-Za-z ]*:", self.text)

    def encode(self, tokenizer, question: str, answer: str, prefix: str = "") -> list[int]:
        """Prompt token ids. A rendered chat template already holds BOS: never add a second one."""
        text = self.render(question, answer, tokenizer, prefix)
        return tokenizer(text, add_special_tokens=not self.chat)["input_ids"]

    def to_dict(self) -> dict:
        return {"name": self.name, "text": self.text, "chat": self.chat}


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("aligner-v1", ALIGNER_V1, description="released aligner-7b-v1.0 prompt (exact)"),
        Template("aligner-v2", ALIGNER_V2, description="##Question/##Answer/##Correction inside the same wrapper"),
        Template("chat-v2", CORRECTION_BLOCK.rstrip(" "), chat=True,
                 description="##Question/##Answer block as the user turn of the tokenizer's chat template"),
        Template("sentence-v1", WRAPPER_BEGIN + WRAPPER_USER.format(input=SENTENCE_BLOCK) + WRAPPER_ASSISTANT,
                 description="sentence level: revise the last sentence given the corrected answer so far"),
        Template("chat-sentence-v1", SENTENCE_BLOCK.rstrip(" "), chat=True,
                 description="sentence level, as the user turn of the tokenizer's chat template"),
        Template("chat-answer-first", "##Answer: {answer}\n##Question: {question}", chat=True,
                 description="answer first, question last: the question sits where a chat model expects it"),
    ]
}
DEFAULT_TEMPLATE = "aligner-v1"  # what a checkpoint without aligner_config.json was most likely trained with


def get_template(spec: "str | dict | Template | None") -> Template:
    """A registered name, a saved template dict, a Template, or a custom '{question} ... {answer}' string."""
    if spec is None:
        return TEMPLATES[DEFAULT_TEMPLATE]
    if isinstance(spec, Template):
        return spec
    if isinstance(spec, dict):
        if "text" not in spec:
            raise UserError(f"template {spec!r}: missing 'text'")
        return Template(spec.get("name", "custom"), spec["text"], bool(spec.get("chat", False)))
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if "{question}" in spec and "{answer}" in spec:
        return Template("custom", spec)
    raise UserError(f"unknown template {spec!r}: use one of {', '.join(TEMPLATES)} "
                    "or a custom string containing {question} and {answer}")
