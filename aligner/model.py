"""The Aligner: a model that reads (question, answer) and writes a corrected answer.

    aligner = Aligner.from_pretrained("runs/minilab/aligner")     # or a hub id / the released checkpoint
    aligner.correct("How do I ...?", "Sure. ...")                   # -> Correction(text, changed, fallback, original)
    aligner.correct_batch([(q1, a1), (q2, a2)], batch_size=16)

Loads seq2seq (T5/BART) and decoder-only (Llama/Qwen/Gemma) checkpoints, and LoRA adapter folders
(peft, only when adapter_config.json is there). Safe by default: safetensors only, no remote code.
Needs only the core dependencies.

Past one process (see lightalign.aligner.engines): the same templates, guards and fallbacks run on
vLLM or on a remote completions server that hosts the Aligner; only the decoding moves.

    Aligner.from_pretrained(path, engine="vllm")                                   # vLLM's offline engine
    Aligner.from_pretrained(path, engine="remote", engine_options={"url": "http://127.0.0.1:8000/v1"})
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lightalign.aligner.engines import NativeEngine, RemoteEngine, VLLMEngine, engine_for
from lightalign.aligner.guards import cut_at_markers, fallback_reason
from lightalign.aligner.templates import Template, get_template
from lightalign.errors import UserError
from lightalign.generation import context_length
from lightalign.io import write_json

CONFIG_NAME = "aligner_config.json"


@dataclass
class Correction:
    text: str  # the corrected answer (the original one if a guard fell back)
    changed: bool  # text differs from the original answer
    fallback: str | None  # why the original was kept: empty, degenerate, truncated, too_long, error: ...
    original: str
    gate_score: float | None = None  # the gate's score when one ran (lightalign.aligner.inspector)
    gate_passed: bool = False  # the gate passed the answer: returned unchanged, never decoded

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
    gate = None  # an Inspector or CopyProbGate (lightalign.aligner.inspector); from_pretrained attaches the saved one

    def __init__(self, model, tokenizer, template: Template | str | dict | None = None,
                 architecture: str | None = None, max_new_tokens: int = 512, num_draft: int = 16,
                 decoding: str = "copy", base_model: str | None = None, copy_bias: float = 0.0,
                 copy_min_prob: float = 0.0, engine=None, config=None,
                 sentence_template: Template | str | dict | None = None):
        """`model` is the loaded transformers model, or None when `engine` (a VLLMEngine or
        RemoteEngine) decodes elsewhere; `config` is then the model's config (its context length)."""
        if model is None and engine is None:
            raise UserError("give a model, or an engine that decodes elsewhere")
        self.model = model.eval() if model is not None else None
        self.config = config if config is not None else model.config
        self.tokenizer = tokenizer
        self.template = get_template(template)
        # set when trained with sentence rows (aligner/streaming.py: streamed, sentence-level correction)
        self.sentence_template = get_template(sentence_template) if sentence_template else None
        self.architecture = architecture or ("seq2seq" if self.config.is_encoder_decoder else "causal")
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
        if engine is not None and (copy_bias or copy_min_prob or decoding != "copy"):
            raise UserError(f"engine {engine.name!r} decodes exact greedy only: copy_bias, copy_min_prob and "
                            "decoding='generate' need the native engine")
        if engine is not None and self.architecture == "seq2seq":
            raise UserError(f"engine {engine.name!r} runs decoder-only Aligners; use the native engine for seq2seq")
        self.engine = engine or NativeEngine(model, tokenizer, decoding, num_draft, copy_bias, copy_min_prob,
                                             self.architecture)

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, template: str | dict | Template | None = None,
                        trust_remote_code: bool = False, allow_pickle: bool = False, device: str | None = None,
                        dtype=None, load_in_4bit: bool = False, engine: str = "native",
                        engine_options: dict | None = None, gate: bool | str = True,
                        gate_threshold: float | None = None, **kwargs) -> "Aligner":
        """Load an Aligner from a folder or hub id.

        `template` overrides the one recorded in aligner_config.json (a checkpoint without that file,
        such as the released aligner-7b-v1.0, gets "aligner-v1"). Adapter folders (adapter_config.json)
        are loaded on their base model through peft and merged for speed (not when load_in_4bit).

        `engine`: "native" (this process), "vllm" (`engine_options` go to `vllm.LLM`, over our
        defaults) or "remote" (`engine_options`: url, and optionally model, key_env, timeout, retries,
        concurrency); the last two read only the folder's config and tokenizer, never its weights.

        `gate`: True loads the gate aligner_config.json names (answers it passes are returned unchanged,
        undecoded), False runs without one, a path attaches that inspector folder; `gate_threshold`
        overrides the saved threshold (see lightalign.aligner.inspector).
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
        model_path = loading.check_model_source(model_path, trust_remote_code, allow_pickle,
                                                what="Aligner base model" if adapter_file else "Aligner")
        if engine_for(engine) != "native":
            native_only = [k for k, v in (("device", device), ("dtype", dtype), ("load_in_4bit", load_in_4bit)) if v]
            if native_only:
                raise UserError(f"engine {engine!r}: {', '.join(native_only)} apply to the native engine only")
            aligner = cls._elsewhere(path, model_path, saved, adapter_file, engine, engine_options or {},
                                     template, trust_remote_code, kwargs)
            return aligner._attach_gate(path, saved, gate, gate_threshold, None, allow_pickle)
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
        kwargs.setdefault("sentence_template", saved.get("sentence_template"))
        aligner = cls(model, tokenizer, template if template is not None else saved.get("template"),
                      architecture=arch, base_model=saved.get("base_model"), **kwargs)
        return aligner._attach_gate(path, saved, gate, gate_threshold, device, allow_pickle)

    def _attach_gate(self, path, saved, gate, threshold, device, allow_pickle) -> "Aligner":
        from lightalign.aligner.inspector import load_gate

        self.gate = load_gate(self, path, saved, gate, threshold, device, allow_pickle)
        return self

    @classmethod
    def _elsewhere(cls, path, model_path, saved, adapter_file, engine, options, template, trust_remote_code,
                   kwargs) -> "Aligner":
        """An Aligner whose decoding runs on vLLM or a remote server: config and tokenizer only."""
        from transformers import AutoConfig, AutoTokenizer

        from lightalign.aligner.decoding import eos_ids

        try:
            config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
            tok_path = path if _locate(path, "tokenizer_config.json") else model_path
            tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read the Aligner's config or tokenizer ({e})") from None
        arch = saved.get("architecture") or ("seq2seq" if config.is_encoder_decoder else "causal")
        max_pos = context_length(config)
        eos = eos_ids(_generation_eos(model_path), tokenizer.eos_token_id)
        if engine == "vllm":
            runner = VLLMEngine(model_path, eos, options, adapter=str(Path(adapter_file).parent) if adapter_file
                                else None, max_positions=max_pos, num_draft=kwargs.get("num_draft", 16))
        else:
            unknown = set(options) - {"url", "model", "key_env", "timeout", "retries", "concurrency", "vllm_fields"}
            if unknown or not options.get("url"):
                raise UserError("engine 'remote' takes engine_options url (required), model, key_env, timeout, "
                                f"retries, concurrency, vllm_fields; got {sorted(options)}")
            runner = RemoteEngine(**options, eos=eos)
        kwargs.setdefault("max_new_tokens", saved.get("max_new_tokens", 512))
        kwargs.setdefault("sentence_template", saved.get("sentence_template"))
        for key in ("copy_bias", "copy_min_prob"):
            if saved.get(key):
                raise UserError(f"{path}: this Aligner decodes with {key}={saved[key]}, which only the native "
                                "engine implements")
        return cls(None, tokenizer, template if template is not None else saved.get("template"), architecture=arch,
                   base_model=saved.get("base_model"), engine=runner, config=config, **kwargs)

    def save_pretrained(self, out: str | os.PathLike, extra: dict | None = None) -> Path:
        """safetensors weights + tokenizer + aligner_config.json (template and architecture)."""
        out = Path(out)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        rule = {"copy_bias": self.copy_bias, "copy_min_prob": self.copy_min_prob}
        if self.sentence_template:
            rule["sentence_template"] = self.sentence_template.to_dict()
        write_json(out / CONFIG_NAME, aligner_config(self.template, self.architecture, self.base_model,
                                                      self.max_new_tokens, {**rule, **(extra or {})}))
        return out

    def close(self) -> None:
        """Free what the engine holds outside this object (vLLM's engine process, HTTP connections)."""
        self.engine.close()

    # ---------------------------------------------------------------- correcting
    def prompt_ids(self, question: str, answer: str) -> list[int]:
        return self.template.encode(self.tokenizer, question, answer)

    def answer_ids(self, answer: str) -> list[int]:
        """The answer as the correction would spell it: copies of it are draft tokens."""
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"]

    def _max_positions(self) -> int | None:
        return context_length(self.config)

    def correct(self, question: str, answer: str) -> Correction:
        return self.correct_batch([(question, answer)], batch_size=1)[0]

    def correct_batch(self, pairs: Iterable, batch_size: int = 16, progress: bool = False,
                      partial: bool = False) -> list[Correction]:
        """Correct (question, answer) pairs (tuples or dicts). One bad pair never fails the others.
        `partial`: the answers are still being written (streamed correction), so the gate screens them
        against its partial threshold (lightalign.aligner.inspector.line)."""
        from tqdm.auto import tqdm

        self.engine.start()  # native: corrections of earlier chunks become drafts for later ones
        pairs = list(pairs)
        items = [self._prepare(p) for p in pairs]
        gate_scores = {}
        if self.gate is not None:  # answers the gate passes become unchanged Corrections here, undecoded
            from lightalign.aligner.inspector import screen

            gate_scores = screen(self.gate, pairs, items, batch_size, Correction, partial=partial)
        results: list[Correction | None] = [it if isinstance(it, Correction) else None for it in items]
        todo = sorted((i for i, it in enumerate(items) if results[i] is None), key=lambda i: len(items[i][0]))
        batch_size = max(1, batch_size)
        group = self.engine.group_size(batch_size)  # rows per engine call (several batches, or all of them)
        chunks = [todo[s:s + group] for s in range(0, len(todo), group)]
        bar = tqdm(total=len(todo), desc="correcting", unit="answer", disable=not progress)
        for chunk in chunks:
            try:
                done = self._decode([items[i] for i in chunk], batch_size)
            except Exception:  # isolate the culprit: retry one by one, flag only the record that fails
                done = []
                for i in chunk:
                    try:
                        done.extend(self._decode([items[i]], 1))
                    except Exception as e:  # noqa: BLE001 - a record's failure becomes a flagged record
                        ans = items[i][3]
                        done.append(Correction(ans, False, f"error: {type(e).__name__}: {e}", ans))
            for i, c in zip(chunk, done):
                results[i] = c
            bar.update(len(chunk))
        bar.close()
        for i, score in gate_scores.items():
            results[i].gate_score = score
        return results  # type: ignore[return-value]

    def correct_sentences(self, items: Sequence[tuple[str, str, str]], batch_size: int = 16) -> list[Correction]:
        """Revise the last sentence of streamed answers: (question, corrected answer so far, sentence)
        -> a Correction of the sentence (see lightalign.aligner.streaming)."""
        from lightalign.aligner.streaming import correct_sentences

        return correct_sentences(self, items, batch_size)

    def stream(self, question: str, chunks, mode: str = "sentence", continue_from=None, **options):
        """The corrected answer as text pieces while `chunks` (the upstream's streamed text) arrive;
        see lightalign.aligner.streaming.correct_stream for the modes."""
        from lightalign.aligner.streaming import correct_stream

        return correct_stream(self, question, chunks, mode=mode, continue_from=continue_from, **options)

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

    def _decode(self, items: list[tuple], batch_size: int) -> list[Correction]:
        outs = self.engine.decode([it[0] for it in items], [it[1] for it in items], [it[2] for it in items],
                                  batch_size)
        results = []
        for it, out in zip(items, outs):
            answer = it[3]
            text = out.text if hasattr(out, "text") else self.tokenizer.decode(out.tokens, skip_special_tokens=True)
            raw = text.strip()
            text = cut_at_markers(raw, answer, self.template.markers)
            # cut at an echoed marker: the correction had ended, whatever the token limit did after it
            reason = fallback_reason(text, answer, out.finished or text != raw)
            if reason:
                text = answer
            results.append(Correction(text, not reason and not _same(text, answer), reason, answer))
        return results


def aligner_config(template: Template, architecture: str, base_model: str | None, max_new_tokens: int,
                   extra: dict | None = None) -> dict:
    from lightalign import __version__

    return {"lightalign_version": __version__, "architecture": architecture, "template": template.to_dict(),
            "base_model": base_model, "max_new_tokens": max_new_tokens, **(extra or {})}


def _generation_eos(model_path: str):
    """The EOS ids of the folder's generation_config.json (None when it has none)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:
        return None


def as_pairs(records: Sequence[dict]) -> list[tuple]:
    return [(r["question"], r["answer"]) for r in records]
