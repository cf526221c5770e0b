"""Checks on a chat-completions request, answered as OpenAI does: 400 with the `param` at fault,
404 `model_not_found` for a model this server does not serve.

Hand-written rather than a pydantic model: the request is relayed upstream as the client sent it
(fields we do not know included), and each message must name the exact field (`messages[2].content`).
"""

from __future__ import annotations

import json
from typing import Any

from lightalign.serve.errors import APIError

MAX_DEPTH = 64  # nesting of the JSON body; chat requests (tools' JSON schemas included) stay far below
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
          "frequency_penalty": (-2.0, 2.0)}


def parse_json(raw: bytes) -> Any:
    """The body as JSON; 400 for bad JSON, nesting deeper than MAX_DEPTH, or text that is not valid
    Unicode (a lone surrogate such as "\\ud800"), naming the field."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}") from None
    _check_tree(body)
    return body


def _check_tree(body: Any) -> None:
    """Depth and Unicode of every value, without recursion (a deep body must not overflow the stack)."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels", param=path or None)
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_text(k, path)
                stack.append((v, f"{path}.{k}" if path else k, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"{path or 'body'}: text is not valid Unicode (a lone surrogate such as \\ud800)",
                       param=path or None) from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_body(body: Any, max_messages: int, model_ids: set[str] | None) -> dict:
    """The body, checked. `model_ids`: the names this server answers to (None: any, the upstream decides)."""
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' must be a non-empty string", param="model")
    if model_ids is not None and model not in model_ids:
        raise APIError(404, f"The model `{model}` does not exist (served: {', '.join(sorted(model_ids))})",
                       code="model_not_found", param="model")
    _check_messages(body.get("messages"), max_messages)
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not _integer(value) or value < 1):
            raise APIError(400, f"'{name}' must be an integer >= 1, got {value!r}", param=name, code="invalid_value")
    for name, (lo, hi) in RANGES.items():
        value = body.get(name)
        if value is not None and (not _number(value) or not lo <= value <= hi):
            raise APIError(400, f"'{name}' must be a number between {lo:g} and {hi:g}, got {value!r}", param=name,
                           code="invalid_value")
    n = body.get("n")
    if n is not None and (not _integer(n) or not 1 <= n <= 128):
        raise APIError(400, f"'n' must be an integer between 1 and 128, got {n!r}", param="n", code="invalid_value")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise APIError(400, "'stop' must be a string or a list of up to 4 strings", param="stop")
    if not isinstance(body.get("stream", False), bool):
        raise APIError(400, "'stream' must be a boolean", param="stream")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    if body.get("seed") is not None and not _integer(body["seed"]):
        raise APIError(400, "'seed' must be an integer", param="seed")
    return body


def _check_messages(messages: Any, max_messages: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    if len(messages) > max_messages:
        raise APIError(400, f"too many messages ({len(messages)} > {max_messages})", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise APIError(400, f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
        if m["role"] not in ROLES:
            raise APIError(400, f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}, got {m['role']!r}",
                           param=f"messages[{i}].role")
        content = m.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise APIError(400, f"messages[{i}].content must be a string or a list of parts",
                           param=f"messages[{i}].content")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise APIError(400, f"messages[{i}].content[{j}] must be an object with a 'type'",
                               param=f"messages[{i}].content[{j}]")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{i}].content[{j}].text must be a string",
                               param=f"messages[{i}].content[{j}].text")
