"""A small client for OpenAI-compatible chat servers (vLLM, llama.cpp, TGI, OpenAI itself), used both
as an upstream system and as the LLM judge.

httpx rather than the `openai` package: httpx is already a core dependency and the one call we need
(POST {url}/chat/completions) does not justify another. Retries with backoff on connection errors,
429 and 5xx; a request that still fails comes back as an error string for that item only, so one bad
reply never stops a batch.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from lightalign.errors import UserError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    pass


class ChatClient:
    def __init__(self, url: str, model: str, api_key_env: str | None = None, timeout: float = 60.0,
                 max_retries: int = 2, concurrency: int = 4):
        import httpx

        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise UserError(f"endpoint {url}: environment variable {api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self._http = httpx.Client(timeout=timeout, headers=headers)

    @classmethod
    def from_config(cls, ep) -> "ChatClient":
        return cls(ep.url, ep.model, ep.api_key_env, ep.timeout, ep.max_retries, ep.concurrency)

    def identity(self) -> dict:
        return {"url": self.url, "model": self.model}

    def chat(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                r = self._http.post(f"{self.url}/chat/completions", json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code in RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code != 200:
                raise EndpointError(f"HTTP {r.status_code}: {r.text[:200]}")
            try:
                content = r.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise EndpointError(f"unexpected response shape: {r.text[:200]}") from None
            return content or ""
        raise EndpointError(f"{self.url}: failed after {self.max_retries + 1} attempts: {last}")

    def chat_many(self, conversations: Sequence[list[dict]], max_tokens: int = 256, temperature: float = 0.0,
                  on_done=None) -> list[str | EndpointError]:
        """Each conversation's reply, or the EndpointError it ended with. `on_done(i, result)` is called
        as each finishes (the caller caches it)."""

        def one(i):
            try:
                result = self.chat(conversations[i], max_tokens, temperature)
            except EndpointError as e:
                result = e
            if on_done:
                on_done(i, result)
            return result

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(len(conversations))))

    def close(self) -> None:
        self._http.close()
