"""The models behind the app: one base model, its adapter switched on and off, and the Aligner.

Memory: the adapter is attached with peft.PeftModel.from_pretrained onto the one copy of the base
weights; base answers run inside `model.disable_adapter()`. Loading the base twice (once plain,
once with the adapter) would double the biggest cost of the app for no gain.

Each part may be missing or broken; the app still serves whatever loaded, and `status` says why a
part is absent, so the page can show it. Only one generation touches the weights at a time (the
adapter switch is global model state, not per-thread), guarded by `lock`.
"""

from __future__ import annotations

import gc
import importlib.util
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lightalign.app.config import AppConfig
from lightalign.errors import UserError
from lightalign.generation import context_length


@dataclass
class PartStatus:
    ok: bool
    message: str


@dataclass
class GenSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0   # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


class PartMissing(Exception):
    """A part of the app (base, adapter, Aligner) that is not available; the message says why."""


class PromptError(ValueError):
    """A prompt the app will not run (empty, too long); the message is shown as is."""


def load_base(path: Path, quantization: str = "nf4", trust_remote_code: bool = False):
    """Base model + tokenizer for inference through lightalign.loading (safetensors only, no remote
    code unless asked, NF4 + double quant unless quantization="none")."""
    from transformers import AutoTokenizer

    from lightalign.loading import load_base as load_frozen_base, model_spec

    if not path.is_dir():
        raise PartMissing(f"{path}: no such folder")
    model = load_frozen_base(model_spec(str(path), quantization, trust_remote_code=trust_remote_code),
                             training=False)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # generation needs a pad id; at inference (no loss masking) EOS is a safe stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def attach_adapter(model, path: Path):
    """Wrap `model` in a PeftModel with the adapter at `path`: the base weights are shared, not copied."""
    from lightalign.loading import load_peft

    if not path.is_dir():
        raise PartMissing(f"{path}: no such folder")
    peft_model = load_peft(model, path)
    peft_model.eval()
    return peft_model


def load_aligner(path: Path, trust_remote_code: bool = False):
    from lightalign.aligner import Aligner

    if not path.exists():
        raise PartMissing(f"{path}: no such folder")
    return Aligner.from_pretrained(path, trust_remote_code=trust_remote_code)


def _describe_adapter(path: Path) -> str:
    import json

    try:
        cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    bits = [f"{cfg.get('peft_type', 'PEFT')}".replace("LORA", "LoRA")]
    if cfg.get("r"):
        bits.append(f"r={cfg['r']}")
    return " (" + ", ".join(bits) + ")"


class Models:
    """Loads what it can at construction (the Aligner lazily, on first use) and never raises for a
    missing part: `status[name]` holds the reason instead."""

    def __init__(self, cfg: AppConfig):
        self.cfg = cfg
        self.lock = threading.Lock()
        self._aligner_lock = threading.Lock()  # two first requests must not load it twice
        self._aligner_use = threading.Lock()  # sentence corrections run beside a base generation
        self.model = None
        self.tokenizer = None
        self.has_adapter = False
        self._aligner = None
        self._aligner_tried = False
        self.status: dict[str, PartStatus] = {}
        self._load()

    # ---- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        cfg = self.cfg
        self.quantization, note = cfg.quantization, ""
        if cfg.quantization == "nf4" and importlib.util.find_spec("bitsandbytes") is None:
            # `pip install lightalign[app]` alone has no bitsandbytes: serve full precision, and say so
            self.quantization, note = "none", "; bitsandbytes is not installed, so not 4-bit"
        try:
            if cfg.base_path is None:
                raise PartMissing("no base model in the config (set `base`)")
            self.model, self.tokenizer = load_base(cfg.base_path, self.quantization, cfg.trust_remote_code)
            kind = ("4-bit NF4" if self.quantization == "nf4"
                    else str(next(self.model.parameters()).dtype).replace("torch.", ""))
            size = self.model.get_memory_footprint() / 2**20
            self.status["base"] = PartStatus(True, f"{cfg.base_path} ({kind}, {size:,.1f} MiB of weights, "
                                                   f"one copy{note})")
        except Exception as e:  # noqa: BLE001 - any load failure is shown in the page, the app stays up
            self.status["base"] = PartStatus(False, f"not loaded: {describe_error(e)}")
            self.status["adapter"] = PartStatus(False, "not loaded: needs the base model")
            self.status["aligner"] = self._aligner_presence()
            return
        path = cfg.adapter_path
        if path is None:
            self.status["adapter"] = PartStatus(False, "switched off in the config")
        else:
            try:
                self.model = attach_adapter(self.model, path)
                self.has_adapter = True
                self.status["adapter"] = PartStatus(True, f"{path}{_describe_adapter(path)}")
            except Exception as e:  # noqa: BLE001
                self.status["adapter"] = PartStatus(False, f"not loaded: {describe_error(e)}")
                self._reload_clean_base()
        self.status["aligner"] = self._aligner_presence()

    def _reload_clean_base(self) -> None:
        """A failed PeftModel.from_pretrained may already have injected LoRA layers into the base
        in place; reload it so base answers are never silently altered."""
        if self.model is None or not any("lora_" in n for n, _ in self.model.named_modules()):
            return
        self.model = None
        gc.collect()
        self.model, self.tokenizer = load_base(self.cfg.base_path, self.quantization, self.cfg.trust_remote_code)

    def _aligner_presence(self) -> PartStatus:
        path = self.cfg.aligner_path
        if path is None:
            return PartStatus(False, "switched off in the config")
        if not path.exists():
            return PartStatus(False, f"not loaded: {path}: no such folder")
        return PartStatus(True, f"{path} (loads on first use)")

    def aligner(self):
        """The Aligner, loaded on first use; raises PartMissing with the reason if it cannot be."""
        with self._aligner_lock:
            return self._get_aligner()

    def _get_aligner(self):
        if self._aligner is None:
            if self._aligner_tried:
                raise PartMissing(self.status["aligner"].message)
            self._aligner_tried = True
            path = self.cfg.aligner_path
            if path is None:
                raise PartMissing("switched off in the config")
            try:
                self._aligner = load_aligner(path, self.cfg.trust_remote_code)
            except Exception as e:  # noqa: BLE001
                self.status["aligner"] = PartStatus(False, f"not loaded: {describe_error(e)}")
                raise PartMissing(self.status["aligner"].message) from None
            self.status["aligner"] = PartStatus(True, f"{path}")
        return self._aligner

    # ---- generation ----------------------------------------------------------------------------
    def prompt_text(self, prompt: str) -> str:
        from lightalign.generation import chat_prompt

        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt(self.tokenizer, prompt)
        return prompt  # a base model with no chat template gets the bare prompt

    def stream(self, prompt: str, adapter: bool, settings: GenSettings, prefix: str = "") -> Iterator[str]:
        """Yield the growing answer (base weights alone, or with the adapter) as it is generated;
        with `prefix`, the continuation of an assistant turn that starts with it (guided streaming).

        generate() runs in a worker thread feeding a TextIteratorStreamer (the transformers way to
        stream); the lock is held until that thread has finished, even if the caller stops early.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        if self.model is None:
            raise PartMissing(f"base model {self.status['base'].message}")
        if adapter and not self.has_adapter:
            raise PartMissing(f"adapter {self.status['adapter'].message}")

        stop = threading.Event()

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        failure: list[BaseException] = []
        tok = self.tokenizer
        with self.lock:
            enc = tok(self.prompt_text(prompt) + prefix, return_tensors="pt", add_special_tokens=False)
            enc = enc.to(next(self.model.parameters()).device)
            max_new = self._new_tokens(enc["input_ids"].shape[1], settings, "The prompt")
            streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            kwargs = dict(**enc, max_new_tokens=max_new, streamer=streamer,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          stopping_criteria=StoppingCriteriaList([_StopWhenAsked()]), **self._sampling(settings))

            def work():
                try:
                    with self._switch(adapter), torch.inference_mode():
                        self.model.generate(**kwargs)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    failure.append(e)
                    streamer.end()

            worker = threading.Thread(target=work, name="lightalign-generate", daemon=True)
            worker.start()
            text = ""
            try:
                for piece in streamer:
                    if piece:  # the streamer also flushes empty pieces; nothing new to show
                        text += piece
                        yield text.strip()
            finally:
                stop.set()
                worker.join()
        if failure:
            raise failure[0]

    def _max_positions(self) -> int | None:
        return context_length(self.model.config)

    def _new_tokens(self, n_prompt: int, settings: GenSettings, what: str) -> int:
        """settings.max_new_tokens, cut to what fits after a prompt of `n_prompt` tokens; PromptError
        when nothing fits (`what` names the prompt in the message)."""
        limit = self._max_positions()
        room = limit - n_prompt if limit else None
        if room is not None and room < 1:
            raise PromptError(f"{what} is {n_prompt:,} tokens long with its chat template; this model "
                              f"reads at most {limit:,}. Shorten it and try again.")
        return int(settings.max_new_tokens) if room is None else min(int(settings.max_new_tokens), room)

    @staticmethod
    def _sampling(settings: GenSettings) -> dict:
        """generate() keywords of the settings (seeding torch when they sample)."""
        import torch

        if settings.temperature > 0:
            torch.manual_seed(int(settings.seed))
            return dict(do_sample=True, temperature=float(settings.temperature), top_p=float(settings.top_p))
        # the model's generation_config may carry sampling defaults; greedy means greedy
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None)

    def _switch(self, adapter: bool):
        """Context in which the model answers without its adapter, unless `adapter` asks for it."""
        return self.model.disable_adapter() if self.has_adapter and not adapter else nullcontext()

    def answer_batch(self, prompts: list[str], adapter: bool, settings: GenSettings) -> list[str]:
        """Answers to several prompts from one batched generate() (lightalign.generation, left padded),
        the same weights and settings as stream(): the rewordings table asks all its wordings at once."""
        import torch

        from lightalign.generation import generate_texts

        if self.model is None:
            raise PartMissing(f"base model {self.status['base'].message}")
        if adapter and not self.has_adapter:
            raise PartMissing(f"adapter {self.status['adapter'].message}")
        texts = [self.prompt_text(p) for p in prompts]
        with self.lock:
            longest = max(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            max_new = self._new_tokens(longest, settings, "The longest wording")
            with self._switch(adapter), torch.inference_mode():
                return generate_texts(self.model, self.tokenizer, texts, max_new_tokens=max_new,
                                      batch_size=len(texts), **self._sampling(settings))

    def answer(self, prompt: str, adapter: bool, settings: GenSettings) -> str:
        text = ""
        for text in self.stream(prompt, adapter, settings):
            pass
        return text

    def correct(self, question: str, answer: str):
        """The Aligner's result (.text, .changed, .fallback) for one question-answer pair."""
        aligner = self.aligner()
        with self.lock:
            return aligner.correct(question, answer)

    def correct_sentence(self, question: str, prefix: str, sentence: str):
        """The Aligner's revision of a streamed answer's last sentence (lightalign.aligner.streaming).
        Called while the base streams: the Aligner's own lock, not the base's (separate weights)."""
        aligner = self.aligner()
        with self._aligner_use:
            return aligner.correct_sentences([(question, prefix, sentence)], batch_size=1)[0]

    def correct_batch(self, pairs: list[tuple[str, str]]) -> list:
        """The Aligner's results for several (question, answer) pairs, decoded as one batch."""
        aligner = self.aligner()
        with self.lock:
            return aligner.correct_batch(pairs, batch_size=len(pairs))

    def describe(self) -> dict[str, PartStatus]:
        return dict(self.status)


def describe_error(e: BaseException, limit: int = 300) -> str:
    """One line for the page: the message's lines joined (the first is often just a heading)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    if isinstance(e, (PartMissing, UserError)):
        return text
    return f"{type(e).__name__}: {text}"
