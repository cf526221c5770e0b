"""The Aligner: a model that reads (question, answer) and writes a corrected answer.

    aligner = Aligner.from_pretrained("runs/minilab/aligner")     # or a hub id / the released checkpoint
    aligner.correct("How do I ...?", "Sure. ...")                   # -> Correction(text, changed, fallback, original)
    aligner.correct_batch([(q1, a1), (q2, a2)], batch_size=16)

Loads seq2seq (T5/BART) and decoder-only (Llama/Qwen/Gemma) checkpoints, and LoRA adapter folders
(peft, only when adapter_config.json is there). Safe by default: safetensors only, no remote code.
Needs only the core dependencies.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lightalign.aligner.guards import fallback_reason
from lightalign.aligner.templates import Template, get_template
from lightalign.errors import UserError
from lightalign.io import write_json

CONFIG_NAME = "aligner_config.json"


@dataclass
class Correction:
    text: str  # the corrected answer (the original one if a guard fell back)
    changed: bool  # text differs from the original answer
    fallback: str | None  # why the original was kept: empty, degenerate, truncated, too_long, error: ...
    original: str

    def to_dict(self) -> dict:
        return asdict(self)


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _locate(path: str, filename: str) -> str | None:
    """A file inside a local folder or a hub repo, or None when it is not there."""
    local = Path(path) / filename
    if Path(path).is_dir():
        return str(local) if local.exists() else None
    try:
        from transformers.utils import cached_file

        return cached_file(path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:
        return None


def _load_error(path: str, e: Exception, allow_pickle: bool) -> UserError:
    """The loader's one-line load error (kept for callers that still import it from here)."""
    from lightalign.loading import load_error

    return load_error(path, e, allow_pickle, what="model")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Aligner:
    def __init__(self, model, tokenizer, template: Template | str | dict | None = None,
                 architecture: str | None = None, max_new_tokens: int = 512, num_draft: int = 16,
                 decoding: str = "copy", base_model: str | None = None, copy_bias: float = 0.0,
                 copy_min_prob: float = 0.0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.architecture = architecture or ("seq2seq" if model.config.is_encoder_decoder else "causal")
        if self.architecture not in ("causal", "seq2seq"):
            raise UserError(f"architecture must be 'causal' or 'seq2seq', got {self.architecture!r}")
        if self.template.chat and self.architecture == "seq2seq":
            raise UserError(f"template {self.template.name!r} uses a chat template: pick a plain one for seq2seq")
        if decoding not in ("copy", "generate"):
            raise UserError(f"decoding must be 'copy' or 'generate', got {decoding!r}")
        if tokenizer.pad_token_id is None:  # inference only: padding is masked, so EOS may double as pad
            tokenizer.pad_token = tokenizer.eos_token
        if copy_bias < 0 or (copy_bias > 0 and decoding == "generate"):
            raise UserError("copy_bias must be >= 0, and needs decoding='copy'")
        if not 0 <= copy_min_prob < 1 or (copy_min_prob > 0 and decoding == "generate"):
            raise UserError("copy_min_prob must be in [0, 1), and needs decoding='copy'")
        self.max_new_tokens = max_new_tokens
        self.num_draft = num_draft
        self.decoding = decoding
        # Both 0: exact greedy. Otherwise a conservative editor keeps the answer's next token while
        # its log-prob is within copy_bias nats of the best one, or its probability is at least
        # copy_min_prob (see decoding._accepted).
        self.copy_bias = copy_bias
        self.copy_min_prob = copy_min_prob
        self.base_model = base_model

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, template: str | dict | Template | None = None,
                        trust_remote_code: bool = False, allow_pickle: bool = False, device: str | None = None,
                        dtype=None, load_in_4bit: bool = False, **kwargs) -> "Aligner":
        """Load an Aligner from a folder or hub id.

        `template` overrides the one recorded in aligner_config.json (a checkpoint without that file,
        such as the released aligner-7b-v1.0, gets "aligner-v1"). Adapter folders (adapter_config.json)
        are loaded on their base model through peft and merged for speed (not when load_in_4bit).
        """
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from lightalign import loading

        path = str(path)
        if not Path(path).expanduser().exists() and not loading.looks_like_hub_id(path):
            raise UserError(f"{path}: no such Aligner folder (path does not exist)")
        saved = {}
        cfg_file = _locate(path, CONFIG_NAME)
        if cfg_file:
            try:
                saved = json.loads(Path(cfg_file).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise UserError(f"{cfg_file}:{e.lineno}: invalid JSON: {e.msg}") from None
        adapter_file = _locate(path, "adapter_config.json")
        model_path = path
        if adapter_file:
            loading.check_adapter_dir(Path(adapter_file).parent, allow_pickle)
            base = saved.get("base_model") or json.loads(Path(adapter_file).read_text())["base_model_name_or_path"]
            model_path = base
        loading.check_model_source(model_path, trust_remote_code, allow_pickle,
                                   what="Aligner base model" if adapter_file else "Aligner")
        device = device or default_device()
        if dtype is None:
            dtype = torch.float32 if device == "cpu" else "auto"
        load_kw = dict(trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True,
                       dtype=dtype)
        if load_in_4bit:
            compute = loading.compute_dtype("fp32" if device == "cpu" else "auto")
            load_kw["quantization_config"] = loading.quantization_config("nf4", True, compute)
        try:
            config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
            arch = saved.get("architecture") or ("seq2seq" if config.is_encoder_decoder else "causal")
            auto = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
            model = auto.from_pretrained(model_path, **load_kw)
        except UserError:
            raise
        except Exception as e:  # OSError/ValueError from transformers, UnpicklingError for a refused pickle
            if not isinstance(e, (OSError, ValueError, RuntimeError)) and type(e).__name__ != "UnpicklingError":
                raise
            raise loading.load_error(model_path, e, allow_pickle, what="Aligner") from None
        if adapter_file:
            model = loading.load_peft(model, Path(adapter_file).parent, allow_pickle)
            if not load_in_4bit:
                model = model.merge_and_unload()  # a plain model again: no LoRA overhead per token
        tok_path = path if _locate(path, "tokenizer_config.json") else model_path
        tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust_remote_code)
        if not load_in_4bit:
            model = model.to(device)
        kwargs.setdefault("max_new_tokens", saved.get("max_new_tokens", 512))
        kwargs.setdefault("copy_bias", saved.get("copy_bias", 0.0))
        kwargs.setdefault("copy_min_prob", saved.get("copy_min_prob", 0.0))
        return cls(model, tokenizer, template if template is not None else saved.get("template"),
                   architecture=arch, base_model=saved.get("base_model"), **kwargs)

    def save_pretrained(self, out: str | os.PathLike, extra: dict | None = None) -> Path:
        """safetensors weights + tokenizer + aligner_config.json (template and architecture)."""
        out = Path(out)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        rule = {"copy_bias": self.copy_bias, "copy_min_prob": self.copy_min_prob}
        write_json(out / CONFIG_NAME, aligner_config(self.template, self.architecture, self.base_model,
                                                      self.max_new_tokens, {**rule, **(extra or {})}))
        return out

    # ---------------------------------------------------------------- correcting
    def prompt_ids(self, question: str, answer: str) -> list[int]:
        return self.template.encode(self.tokenizer, question, answer)

    def answer_ids(self, answer: str) -> list[int]:
        """The answer as the correction would spell it: copies of it are draft tokens."""
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"]

    def _max_positions(self) -> int | None:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if getattr(cfg, name, None):
                return int(getattr(cfg, name))
        return None

    def correct(self, question: str, answer: str) -> Correction:
        return self.correct_batch([(question, answer)], batch_size=1)[0]

    def correct_batch(self, pairs: Iterable, batch_size: int = 16, progress: bool = False) -> list[Correction]:
        """Correct (question, answer) pairs (tuples or dicts). One bad pair never fails the others."""
        from tqdm.auto import tqdm

        from lightalign.aligner.decoding import DraftMemory

        self._memory = DraftMemory()  # corrections of earlier chunks become drafts for later ones
        items = [self._prepare(p) for p in pairs]
        results: list[Correction | None] = [it if isinstance(it, Correction) else None for it in items]
        todo = sorted((i for i, it in enumerate(items) if results[i] is None), key=lambda i: len(items[i][0]))
        chunks = [todo[s:s + batch_size] for s in range(0, len(todo), max(1, batch_size))]
        for chunk in tqdm(chunks, desc="correcting", unit="batch", disable=not progress):
            try:
                done = self._decode([items[i] for i in chunk])
            except Exception:  # isolate the culprit: retry one by one, flag only the record that fails
                done = []
                for i in chunk:
                    try:
                        done.extend(self._decode([items[i]]))
                    except Exception as e:  # noqa: BLE001 - a record's failure becomes a flagged record
                        ans = items[i][3]
                        done.append(Correction(ans, False, f"error: {type(e).__name__}: {e}", ans))
            for i, c in zip(chunk, done):
                results[i] = c
        return results  # type: ignore[return-value]

    def _prepare(self, pair):
        """(prompt ids, answer ids, limit, answer) for a valid pair, or a flagged Correction for a bad one."""
        if isinstance(pair, dict):
            question, answer = pair.get("question"), pair.get("answer")
        else:
            try:
                question, answer = pair
            except (TypeError, ValueError):
                return Correction("", False, "error: expected a (question, answer) pair", "")
        if not isinstance(question, str) or not isinstance(answer, str):
            original = answer if isinstance(answer, str) else ""
            return Correction(original, False, "error: question and answer must be strings", original)
        prompt = self.prompt_ids(question, answer)
        limit = self.max_new_tokens
        max_pos = self._max_positions()
        if max_pos and self.architecture == "causal":
            limit = min(limit, max_pos - len(prompt))
        if max_pos and (limit < 1 or (self.architecture == "seq2seq" and len(prompt) > max_pos)):
            return Correction(answer, False, "too_long", answer)
        return prompt, self.answer_ids(answer), limit, answer

    def _decode(self, items: list[tuple]) -> list[Correction]:
        from lightalign.aligner import decoding

        prompts = [it[0] for it in items]
        limit = min(it[2] for it in items)  # rows in a chunk share one limit (they are sorted by length)
        if self.decoding == "generate":
            outs = self._generate_plain(prompts, limit)
        else:
            fn = decoding.copy_greedy_seq2seq if self.architecture == "seq2seq" else decoding.copy_greedy_causal
            outs = fn(self.model, prompts, [it[1] for it in items], pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=self.tokenizer.eos_token_id, max_new_tokens=limit, num_draft=self.num_draft,
                      copy_bias=self.copy_bias, copy_min_prob=self.copy_min_prob,
                      memory=getattr(self, "_memory", None))
        results = []
        for it, out in zip(items, outs):
            answer = it[3]
            text = self.tokenizer.decode(out.tokens, skip_special_tokens=True).strip()
            reason = fallback_reason(text, answer, out.finished)
            if reason:
                text = answer
            results.append(Correction(text, not reason and not _same(text, answer), reason, answer))
        return results

    def _generate_plain(self, prompts: list[list[int]], limit: int) -> list:
        """Reference path: one transformers `generate` call per prompt (greedy, no padding)."""
        import torch

        from lightalign.aligner.decoding import Decoded, _eos_set

        device = next(self.model.parameters()).device
        eos = _eos_set(self.model, self.tokenizer.eos_token_id)
        outs = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p], device=device)
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=limit, pad_token_id=self.tokenizer.pad_token_id,
                                          eos_token_id=sorted(eos))
                new = gen[0] if self.architecture == "seq2seq" else gen[0, len(p):]
                toks = new.tolist()
                if self.architecture == "seq2seq":
                    toks = toks[1:]  # the decoder start token
                cut = next((k for k, t in enumerate(toks) if t in eos), None)
                outs.append(Decoded(toks[:cut] if cut is not None else toks, cut is not None))
        return outs


def aligner_config(template: Template, architecture: str, base_model: str | None, max_new_tokens: int,
                   extra: dict | None = None) -> dict:
    from lightalign import __version__

    return {"lightalign_version": __version__, "architecture": architecture, "template": template.to_dict(),
            "base_model": base_model, "max_new_tokens": max_new_tokens, **(extra or {})}


def as_pairs(records: Sequence[dict]) -> list[tuple]:
    return [(r["question"], r["answer"]) for r in records]
