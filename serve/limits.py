"""Prompts longer than a model can read are refused up front (400 `context_length_exceeded`).

Written here because the check must never cost more than the model could read: a token of a
vocabulary spans at most `max_token_chars` characters, so a text longer than
`max_tokens * max_token_chars * SLACK` characters cannot fit and is refused without tokenizing it
(SLACK covers normalizers that drop characters). A shorter text is tokenized in a worker thread,
never on the event loop, and refused if its exact count is over the limit.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from lightalign.generation import context_length
from lightalign.serve.errors import APIError

SLACK = 2


class PromptLimit:
    def __init__(self, what: str, max_tokens: int, max_token_chars: int, count: Callable[[Any], int],
                 chars: Callable[[Any], int] = len):
        self.what, self.max_tokens = what, max_tokens
        self.max_chars = max_tokens * max(1, max_token_chars) * SLACK
        self._count, self._chars = count, chars

    def _refuse(self, detail: str) -> APIError:
        return APIError(400, f"{self.what} reads at most {self.max_tokens} tokens; {detail}. "
                             "Shorten the messages.", code="context_length_exceeded", param="messages")

    async def check(self, value: Any) -> int | None:
        """The token count of `value`, or APIError(400) when it does not fit."""
        n_chars = self._chars(value)
        if n_chars > self.max_chars:
            raise self._refuse(f"the prompt has {n_chars} characters, more than that many tokens can hold")
        n_tokens = await asyncio.to_thread(self._count, value)
        if n_tokens > self.max_tokens:
            raise self._refuse(f"the prompt has {n_tokens} tokens")
        return n_tokens


def max_token_chars(tokenizer) -> int:
    """The longest vocabulary entry, in characters (a bound on the text one token covers)."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return 64
    return max((len(t) for t in vocab), default=64) + 1


def max_positions(model) -> int | None:
    """The context length of a model (or of anything with a `config`, such as an Aligner)."""
    return context_length(getattr(model, "config", None))
