"""Upstream connectors: where the answers an Aligner corrects come from.

- LocalModelUpstream: a transformers model on this machine (optionally with a LoRA adapter).
- OpenAICompatibleUpstream: any /v1/chat/completions server (vLLM, llama.cpp, Ollama, OpenAI), through
  lightalign.openai_client.
- FileUpstream: a JSONL/JSON file of answers generated earlier.
Each has `answer(question) -> str` and `answer_batch(questions) -> list[str | UpstreamError]`;
a failed question is returned as its error (UpstreamError, or EndpointError over HTTP) so one bad
record never fails the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lightalign.errors import UserError
from lightalign.io import read_records
from lightalign.model_sources import resolve as resolve_model


class UpstreamError(UserError):
    """A local model or an answers file could not answer (an HTTP upstream fails with
    lightalign.openai_client.EndpointError instead)."""


class LocalModelUpstream:
    def __init__(self, path: str, adapter: str | None = None, system: str | None = None, max_new_tokens: int = 256,
                 batch_size: int = 16, trust_remote_code: bool = False, allow_pickle: bool = False,
                 device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lightalign.aligner.model import _load_error, default_device

        self.name = Path(path).name + (f"+{Path(adapter).name}" if adapter else "")
        if adapter:
            check_adapter_folder(adapter, allow_pickle)
        path = resolve_model(path, what="upstream model")  # a GGUF or pkg: file -> its cached folder
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True,
                dtype=torch.float32 if (device or default_device()) == "cpu" else "auto")
        except (OSError, ValueError) as e:
            raise _load_error(path, e, allow_pickle) from None
        if adapter:
            from lightalign.loading import load_peft

            try:
                model = load_peft(model, adapter, allow_pickle)
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                raise UserError(f"{adapter}: cannot load the LoRA adapter on {path}: "
                                f"{' '.join(str(e).split())[:300]}") from None
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


def check_adapter_folder(adapter: str | Path, allow_pickle: bool = False) -> None:
    """A LoRA adapter folder (lightalign.loading's check: safetensors unless allow_pickle), and not an
    Aligner passed by mistake: else a one-line error."""
    from lightalign import loading

    if (Path(adapter) / "aligner_config.json").is_file():
        raise UserError(f"{adapter}: this is an Aligner, not a LoRA adapter (pass it as --aligner)")
    loading.check_adapter_dir(adapter, allow_pickle)


class OpenAICompatibleUpstream:
    """Any /v1/chat/completions server, through lightalign.openai_client.ChatClient (its URL, auth,
    retry and error rules). A failed question comes back as its EndpointError."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, system: str | None = None,
                 max_tokens: int = 256, temperature: float = 0.0, timeout: float = 60.0, retries: int = 2,
                 concurrency: int = 4):
        from lightalign.openai_client import ChatClient

        self.client = ChatClient(base_url, model, api_key, timeout=timeout, retries=retries, concurrency=concurrency)
        self.name, self.system = model, system
        self.max_tokens, self.temperature = max_tokens, temperature

    def close(self):
        self.client.close()

    def _messages(self, question: str) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": question}]

    def answer(self, question: str) -> str:
        return self.client.chat(self._messages(question), self.max_tokens, self.temperature)

    def answer_batch(self, questions: Sequence[str]) -> list:
        return self.client.chat_many([self._messages(q) for q in questions], self.max_tokens, self.temperature)


class FileUpstream:
    """Answers generated earlier: rows with a question and an answer field, looked up by question."""

    def __init__(self, path: str, question_field: str = "question", answer_field: str = "answer"):
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
