"""The one client for OpenAI-compatible servers (vLLM, llama.cpp, TGI, Ollama, OpenAI itself),
used by `lightalign correct`, by eval (an upstream system and the LLM judge) and by `lightalign serve`.

Built on the `openai` SDK; this module only fixes the rules every command shares:

- URL: a base URL such as `http://127.0.0.1:8000/v1`. When its path is empty (`http://host:8000`),
  `/v1` is appended; any other path is used as given. Requests go to `<base>/chat/completions`
  (or `<base>/completions`).
- Auth: the key is read from an environment variable the user names (`--upstream-key-env VAR`,
  `api_key_env:` in eval recipes) and sent as `Authorization: Bearer <key>`; with no variable named,
  no Authorization header is sent (the SDK's own OPENAI_API_KEY lookup is not used). A URL that
  carries credentials (`http://user:pw@host/v1`) is refused: they would be logged by the HTTP
  library and sent as Basic auth.
- Retries: the SDK's policy. Connection errors, timeouts, 408, 409, 429 and 5xx are retried
  `retries` times with exponential backoff (0.5 s doubling, at most 8 s, or the server's
  Retry-After); other 4xx are not retried.
- Errors: `EndpointError`, a one-line message naming the URL (never the key), with `kind`
  ("timeout", "unreachable", "http", "bad_response"), `status` and `detail` (the server's message).

`ChatClient` is synchronous with `chat_many` for concurrency (correct, eval), and `text_completions`
for `<base>/completions` (a remote Aligner takes its rendered prompt there); `AsyncChatClient`
(serve) relays a whole request body and returns the server's JSON as is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from lightalign.errors import UserError

RETRIED_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class EndpointError(UserError):
    """A chat server did not give an answer. `str(e)` is one line; the key never appears in it."""

    def __init__(self, message: str, kind: str, status: int | None = None, detail: str = "",
                 retry_after: str | None = None):
        super().__init__(_one_line(message))
        self.kind, self.status, self.detail, self.retry_after = kind, status, _one_line(detail), retry_after


def base_url(url: str, what: str = "url") -> str:
    """The base URL requests are sent under (see the module docstring); refuses embedded credentials."""
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"{what}: give a URL such as http://127.0.0.1:8000/v1")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - a port out of range or not a number raises here
    except ValueError as e:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise UserError(f"{what} {_redact_url(url)!r}: not a valid URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{what} {_redact_url(url)!r}: give an http(s) URL such as http://127.0.0.1:8000/v1")
    if parts.username is not None or parts.password is not None:
        raise UserError(f"{what} {_redact_url(url)!r}: credentials in the URL are refused (they would be logged "
                        "and sent as Basic auth); put the key in an environment variable and name it with "
                        "--upstream-key-env (or api_key_env), it is sent as a Bearer token")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def key_from_env(var: str | None, what: str = "--upstream-key-env") -> str | None:
    """The key held by the environment variable `var` (None when no variable is named)."""
    if not var:
        return None
    value = os.environ.get(var, "").strip()
    if not value:
        raise UserError(f"{what}: environment variable {var} is not set or empty")
    _SECRETS.add(value)
    return value


class _Settings:
    def __init__(self, url: str, model: str | None, api_key: str | None, timeout: float, retries: int):
        if retries < 0:
            raise UserError(f"retries must be >= 0, got {retries}")
        if not timeout or timeout <= 0:
            raise UserError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = base_url(url)
        self.model, self.timeout, self.retries = model, float(timeout), int(retries)
        self._key = api_key
        if api_key:
            _SECRETS.add(api_key)
        _install_log_redaction()

    def sdk_kwargs(self) -> dict:
        return {"base_url": self.url, "api_key": self._key or "none", "organization": "", "project": "",
                "timeout": self.timeout, "max_retries": self.retries}

    def request_headers(self) -> dict | None:
        """With no key, the Authorization header is omitted explicitly (the SDK insists on some key)."""
        import openai

        return None if self._key else {"Authorization": openai.Omit()}

    def error(self, e: Exception) -> EndpointError:
        """The SDK's exception as an EndpointError (one line, key removed)."""
        import openai

        if isinstance(e, openai.APITimeoutError):
            return EndpointError(self._tries(f"{self.url}: no answer within {self.timeout:g}s (timeout)"), "timeout")
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            return EndpointError(self._tries(f"{self.url}: cannot connect ({type(cause).__name__}: "
                                             f"{self.redact(str(cause))[:200]}); is the server running?"),
                                 "unreachable")
        if isinstance(e, openai.APIStatusError):
            detail = self.redact(_server_message(e.body, e.response))
            status = e.status_code
            message = f"{self.url}: HTTP {status}: {detail}"
            return EndpointError(self._tries(message) if status in RETRIED_STATUS else message, "http", status,
                                 detail, e.response.headers.get("retry-after"))
        return EndpointError(f"{self.url}: {type(e).__name__}: {self.redact(str(e))[:200]}", "bad_response")

    def _tries(self, message: str) -> str:
        n = self.retries + 1
        return f"{message} (after {n} attempt{'s' if n > 1 else ''})"

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def parse(self, response) -> dict:
        try:
            reply = json.loads(response.text)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise EndpointError(f"{self.url}: not a chat-completions response: {self.redact(response.text[:200])}",
                                "bad_response")
        return reply

    def identity(self) -> dict:
        return {"url": self.url, "model": self.model}

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(url={self.url!r}, model={self.model!r})"


class ChatClient(_Settings):
    """Synchronous chat completions; `chat_many` runs up to `concurrency` requests at once."""

    def __init__(self, url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 2, concurrency: int = 4):
        import openai

        super().__init__(url, model, api_key, timeout, retries)
        self.concurrency = max(1, int(concurrency))
        self._sdk = openai.OpenAI(**self.sdk_kwargs(),
                                  http_client=openai.DefaultHttpxClient(follow_redirects=False))

    @classmethod
    def from_env(cls, url: str, model: str, key_env: str | None = None, what: str = "api_key_env",
                 **kwargs) -> "ChatClient":
        """A client whose key is read from the environment variable `key_env` (`what` names the option)."""
        return cls(url, model, key_from_env(key_env, what), **kwargs)

    def complete(self, body: dict) -> dict:
        """The server's chat.completion for a request body (`model` defaults to this client's)."""
        import openai

        body = {"model": self.model, **body}
        rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
        try:
            raw = self._sdk.chat.completions.with_raw_response.create(
                model=body["model"], messages=body["messages"], extra_body=rest or None,
                extra_headers=self.request_headers())
        except openai.OpenAIError as e:
            raise self.error(e) from None
        return self.parse(raw.http_response)

    def chat(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.0) -> str:
        """The reply's text (stripped of surrounding whitespace)."""
        reply = self.complete({"messages": messages, "max_tokens": max_tokens, "temperature": temperature})
        return reply_text(reply, self.url)

    def chat_many(self, conversations: Sequence[list[dict]], max_tokens: int = 256, temperature: float = 0.0,
                  on_done: Callable | None = None) -> list:
        """Each conversation's reply, or the EndpointError it ended with (one failure never stops the
        others). `on_done(i, result)` is called as each finishes."""

        def one(i):
            try:
                result = self.chat(conversations[i], max_tokens, temperature)
            except EndpointError as e:
                result = e
            if on_done:
                on_done(i, result)
            return result

        if self.concurrency == 1 or len(conversations) <= 1:
            return [one(i) for i in range(len(conversations))]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(len(conversations))))

    def text_completion(self, prompt: str | list[int], max_tokens: int, temperature: float = 0.0,
                        extra: dict | None = None) -> tuple:
        """(text, finish_reason, token ids or None) from `<base>/completions` for a prompt given as text
        or token ids (the legacy completions API takes an array of ints: no re-tokenization, no second
        BOS). `extra` adds server-specific fields (vLLM: return_token_ids, stop_token_ids)."""
        import openai

        try:
            raw = self._sdk.completions.with_raw_response.create(
                model=self.model, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                extra_body=extra or None, extra_headers=self.request_headers())
        except openai.OpenAIError as e:
            raise self.error(e) from None
        reply = self.parse(raw.http_response)
        try:
            choice = reply["choices"][0]
            text, finish, ids = choice["text"], choice.get("finish_reason"), choice.get("token_ids")
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"{self.url}: not a completions response: {json.dumps(reply)[:200]}",
                                "bad_response") from None
        if not isinstance(text, str):
            raise EndpointError(f"{self.url}: the completion has no text", "bad_response")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(t, int) for t in ids)):
            raise EndpointError(f"{self.url}: token_ids is not a list of ids", "bad_response")
        return text, finish, ids

    def text_completions(self, prompts: Sequence, max_tokens: Sequence[int], temperature: float = 0.0,
                         extra: dict | None = None) -> list:
        """Each prompt's (text, finish_reason, token ids), or the EndpointError it ended with,
        `concurrency` requests at a time."""

        def one(i):
            try:
                return self.text_completion(prompts[i], max_tokens[i], temperature, extra)
            except EndpointError as e:
                return e

        if self.concurrency == 1 or len(prompts) <= 1:
            return [one(i) for i in range(len(prompts))]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(len(prompts))))

    def only_model(self) -> str:
        """The id of the one model the server lists at `<base>/models` (vLLM serves one per process)."""
        import openai

        try:
            models = [m.id for m in self._sdk.models.list(extra_headers=self.request_headers())]
        except openai.OpenAIError as e:
            raise self.error(e) from None
        if len(models) != 1:
            raise UserError(f"{self.url}: the server lists {len(models)} models ({', '.join(models[:5])}); "
                            "name the one to use")
        return models[0]

    def close(self) -> None:
        self._sdk.close()


class AsyncChatClient(_Settings):
    """Asynchronous relay of whole request bodies (every parameter the caller set reaches the server)."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, *, timeout: float = 120.0,
                 retries: int = 0, max_connections: int = 64):
        super().__init__(url, model, api_key, timeout, retries)
        self.max_connections = max(1, int(max_connections))
        self._sdk = None
        self._slots: asyncio.Semaphore | None = None  # created in the event loop that uses it

    def _client(self):
        import openai

        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(**self.sdk_kwargs(),
                                           http_client=openai.DefaultAsyncHttpxClient(follow_redirects=False))
            self._slots = asyncio.Semaphore(self.max_connections)
        return self._sdk

    async def complete(self, body: dict) -> dict:
        """The server's chat.completion (as JSON) for a request body; `model` is replaced by this
        client's model when it has one. Raises EndpointError."""
        import openai

        body = dict(body, stream=False)
        if self.model:
            body["model"] = self.model
        rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
        sdk = self._client()
        try:
            async with self._slots:  # at most max_connections requests in flight; others wait their turn
                raw = await sdk.chat.completions.with_raw_response.create(
                    model=body.get("model") or "default", messages=body["messages"], extra_body=rest,
                    extra_headers=self.request_headers())
        except openai.OpenAIError as e:
            raise self.error(e) from None
        return self.parse(raw.http_response)

    async def stream_text(self, body: dict):
        """The text deltas of the first choice of a streamed chat completion (`stream: true`), as an
        async generator; closing it (`aclose()`) closes the connection, which cancels the request on
        servers that watch for disconnects (vLLM, OpenAI). Raises EndpointError."""
        import openai

        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        if self.model:
            body["model"] = self.model
        rest = {k: v for k, v in body.items() if k not in ("model", "messages")}
        sdk = self._client()
        async with self._slots:
            try:
                stream = await sdk.chat.completions.create(
                    model=body.get("model") or "default", messages=body["messages"], stream=True, extra_body=rest,
                    extra_headers=self.request_headers())
            except openai.OpenAIError as e:
                raise self.error(e) from None
            try:
                async for chunk in stream:
                    for choice in chunk.choices or []:
                        if choice.index == 0 and choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
            except openai.OpenAIError as e:
                raise self.error(e) from None
            finally:
                await _closed(stream)

    async def close(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = self._slots = None


async def _closed(stream) -> None:
    """Close a streamed response even while the caller is being cancelled (a client hung up)."""
    import anyio

    with anyio.CancelScope(shield=True):
        await stream.close()


def reply_text(reply: dict, url: str = "") -> str:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{url}: not a chat-completions response: {json.dumps(reply)[:200]}",
                            "bad_response") from None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise EndpointError(f"{url}: the answer has no text content", "bad_response")
    return content.strip()


def _server_message(body, response) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    if isinstance(body, str) and body:
        return body[:300]
    return (getattr(response, "text", "") or getattr(response, "reason_phrase", "") or "")[:300]


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _redact_url(url: str) -> str:
    """`https://user:pass@host/v1` -> `https://***@host/v1` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


# -- secrets never reach a log line: HTTP-library and SDK records are redacted before any handler
_SECRETS: set[str] = set()
_LOGGERS = ("httpx", "httpx2", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
            "openai", "openai._base_client")
_installed = threading.Lock()


class _RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: let logging report it as usual
            return True
        clean = re.sub(r"(https?://)[^/@\s]+@", r"\1***@", message)
        for secret in list(_SECRETS):
            clean = clean.replace(secret, "***")
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _install_log_redaction() -> None:
    with _installed:
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _RedactSecrets) for f in logger.filters):
                logger.addFilter(_RedactSecrets())
