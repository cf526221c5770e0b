"""Request fields `lightalign serve` cannot honour, refused as OpenAI refuses what it cannot do: 400
naming the `param` (code "unsupported_parameter" / "unsupported_value"), never a 200 that silently
ignores the field. The one list; tests/test_serve_unsupported.py has a test per entry.

Why each is refused: the client receives the Aligner's text, not the upstream's, so anything that
describes or constrains the upstream's tokens (log-probs, logit_bias, a JSON response format, audio
output) would describe a text the client does not get; the Aligner reads text only, so an image,
audio or file part would be corrected by a model that never saw it. A local upstream decodes greedily
with no tools or stop sequences, so sampling settings, tools and `stop` are refused there too.
Fields not listed are honoured: relayed to an HTTP upstream as sent (tools, seed, user, metadata ...)
or applied by the proxy (max_tokens, n, stream, stream_options).
"""

from __future__ import annotations

from typing import Any, Callable

from lightalign.serve.errors import APIError

TOP_LOGPROBS_MAX = 20  # OpenAI's own limit


def _set(value: Any) -> bool:
    return value is not None and value is not False


def _not_text_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") not in (None, "text")


def _audio_out(value: Any) -> bool:
    return isinstance(value, list) and any(m != "text" for m in value)


def _sampling(default: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value != default


# field -> (refused when, why). Every upstream.
REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "logprobs": (lambda v: v is True, "log-probabilities describe the upstream's tokens, not the corrected text "
                                      "the client receives"),
    "top_logprobs": (_set, "log-probabilities describe the upstream's tokens, not the corrected text"),
    "logit_bias": (lambda v: bool(v), "the Aligner's correction does not follow the upstream's logit_bias"),
    "response_format": (_not_text_format, "a correction can break a JSON response format; only {'type': 'text'} "
                                          "is honoured"),
    "modalities": (_audio_out, "only text output is corrected"),
    "audio": (_set, "only text output is corrected"),
    "prediction": (_set, "predicted outputs describe the upstream's answer, not the correction"),
}

# content part types the Aligner cannot read (it would correct an answer about content it never saw)
REFUSED_PARTS = {"image_url": "images", "input_audio": "audio", "file": "files"}

# Only for a local upstream: greedy decoding without tools or stop sequences.
REFUSED_LOCAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (lambda v: v is not None and v != 0, "a local upstream decodes greedily (temperature 0)"),
    "top_p": (_sampling(1), "a local upstream decodes greedily"),
    "presence_penalty": (_sampling(0), "a local upstream decodes greedily, without penalties"),
    "frequency_penalty": (_sampling(0), "a local upstream decodes greedily, without penalties"),
    "stop": (_set, "a local upstream has no stop sequences"),
    "tools": (lambda v: bool(v), "a local upstream does not call tools"),
    "tool_choice": (lambda v: v not in (None, "none"), "a local upstream does not call tools"),
    "functions": (lambda v: bool(v), "a local upstream does not call functions"),
    "function_call": (lambda v: v not in (None, "none"), "a local upstream does not call functions"),
}


def check_honoured(body: dict, local: bool = False) -> None:
    """400 for the first field of `body` this server cannot honour (see the module docstring)."""
    top = body.get("top_logprobs")
    if isinstance(top, int) and not isinstance(top, bool) and not 0 <= top <= TOP_LOGPROBS_MAX:
        raise APIError(400, f"'top_logprobs' must be between 0 and {TOP_LOGPROBS_MAX}, got {top}",
                       param="top_logprobs", code="invalid_value")
    rules = {**REFUSED, **(REFUSED_LOCAL if local else {})}
    for name, (refused, why) in rules.items():
        if name in body and refused(body[name]):
            raise APIError(400, f"'{name}' is not supported by this server: {why}", param=name,
                           code="unsupported_parameter")
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in REFUSED_PARTS:
                raise APIError(400, f"messages[{i}].content[{j}]: {REFUSED_PARTS[kind]} are not supported: the "
                               "Aligner that corrects the answer reads text only", param=f"messages[{i}].content[{j}]",
                               code="unsupported_value")
