"""Upstream connectors: where the answers an Aligner corrects come from.

- LocalModelUpstream: a transformers model on this machine (optionally with a LoRA adapter).
- OpenAICompatibleUpstream: any /v1/chat/completions server (vLLM, llama.cpp, Ollama, OpenAI).
- FileUpstream: a JSONL/JSON file of answers generated earlier.
Each has `answer(question) -> str` and `answer_batch(questions) -> list[str | UpstreamError]`;
a failed question is returned as its error so one bad record never fails the batch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from lightalign.errors import UserError


class UpstreamError(UserError):
    """An upstream model could not answer (server down, timeout, HTTP error, missing answer)."""


class LocalModelUpstream:
    def __init__(self, path: str, adapter: str | None = None, system: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 16, trust_remote_code: bool = False, allow_pickle: bool = False,
                 device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lightalign.aligner.model import _load_error, default_device

        self.name = Path(path).name + (f"+{Path(adapter).name}" if adapter else "")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True,
                dtype=torch.float32 if (device or default_device()) == "cpu" else "auto")
        except (OSError, ValueError) as e:
            raise _load_error(path, e, allow_pickle) from None
        if adapter:
            try:
                from peft import PeftModel
            except ImportError:
                raise UserError("an upstream adapter needs peft: pip install lightalign[train]") from None
            model = PeftModel.from_pretrained(model, adapter)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(device or default_device()).eval()
        self.system, self.max_new_tokens, self.batch_size = system, max_new_tokens, batch_size

    def answer_batch(self, questions: Sequence[str]) -> list:
        from lightalign.generation import generate_chat

        try:
            return generate_chat(self.model, self.tokenizer, list(questions), system=self.system,
                                 max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        except Exception:  # find the one that fails; keep the rest
            out = []
            for q in questions:
                try:
                    out.extend(generate_chat(self.model, self.tokenizer, [q], system=self.system,
                                             max_new_tokens=self.max_new_tokens))
                except Exception as e:  # noqa: BLE001
                    out.append(UpstreamError(f"{self.name}: generation failed: {type(e).__name__}: {e}"))
            return out

    def answer(self, question: str) -> str:
        return _raise_if_error(self.answer_batch([question])[0])


class OpenAICompatibleUpstream:
    """Chat completions over HTTP with timeouts, retries on transient failures, and one-line errors."""

    RETRY_STATUS = {408, 429, 500, 502, 503, 504}

    def __init__(self, base_url: str, model: str, api_key: str | None = None, system: str | None = None,
                 max_tokens: int = 256, temperature: float = 0.0, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5, concurrency: int = 4, transport=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.url = self.base_url + "/chat/completions"
        self.name, self.system = model, system
        self.max_tokens, self.temperature = max_tokens, temperature
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, max(1, concurrency)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers, transport=transport)

    def close(self):
        self.client.close()

    def _error(self, resp) -> str:
        try:
            body = resp.json()
            detail = body.get("error", body)
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = resp.text[:200]
        return f"{self.url}: HTTP {resp.status_code}: {detail}"

    def answer(self, question: str) -> str:
        import httpx

        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": question}]
        payload = {"model": self.name, "messages": messages, "max_tokens": self.max_tokens,
                   "temperature": self.temperature}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self.client.post(self.url, json=payload)
            except httpx.TimeoutException:
                last = f"{self.url}: no answer within {self.timeout:g}s (timeout; raise it with --timeout)"
                continue
            except httpx.TransportError as e:
                last = f"{self.url}: cannot connect ({type(e).__name__}: {e}); is the server running?"
                continue
            if resp.status_code in self.RETRY_STATUS:
                last = self._error(resp)
                continue
            if resp.status_code >= 400:  # a client error does not get better by retrying
                raise UpstreamError(self._error(resp))
            try:
                content = resp.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise UpstreamError(f"{self.url}: not a chat-completions response: {resp.text[:200]}") from None
            if not isinstance(content, str):
                raise UpstreamError(f"{self.url}: the answer has no text content")
            return content.strip()
        tries = self.retries + 1
        raise UpstreamError(f"{last} (after {tries} attempt{'s' if tries > 1 else ''})")

    def answer_batch(self, questions: Sequence[str]) -> list:
        from concurrent.futures import ThreadPoolExecutor

        def one(q):
            try:
                return self.answer(q)
            except UpstreamError as e:
                return e

        if self.concurrency == 1 or len(questions) <= 1:
            return [one(q) for q in questions]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, questions))


class FileUpstream:
    """Answers generated earlier: rows with a question and an answer field, looked up by question."""

    def __init__(self, path: str, question_field: str = "question", answer_field: str = "answer"):
        from lightalign.io import read_records

        self.name = Path(path).name
        self.answers: dict[str, str] = {}
        for lineno, row in read_records(path):
            q = row.get(question_field, row.get("prompt"))
            a = row.get(answer_field)
            if not isinstance(q, str) or not isinstance(a, str):
                raise UserError(f"{path}:{lineno}: needs string fields {question_field!r} and {answer_field!r}")
            self.answers[q] = a

    def answer(self, question: str) -> str:
        if question not in self.answers:
            raise UpstreamError(f"{self.name}: no answer for question {question[:80]!r}")
        return self.answers[question]

    def answer_batch(self, questions: Sequence[str]) -> list:
        return [self.answers[q] if q in self.answers else UpstreamError(
            f"{self.name}: no answer for question {q[:80]!r}") for q in questions]


def _raise_if_error(x):
    if isinstance(x, Exception):
        raise x
    return x
