"""The systems under comparison, and how each answers a prompt.

Every system is an *upstream* (base, base + adapter, base + URIAL prompt, or an OpenAI-compatible
endpoint) optionally followed by an Aligner that post-edits the upstream's answer. Two stages, each
cached on its own key, so "base + Aligner" reuses the base answers already generated for "base",
and retraining the Aligner regenerates only the corrections.

One copy of the base weights serves every local system: adapters are loaded onto it as named PEFT
adapters and switched with set_adapter(); the base and URIAL systems run inside disable_adapter().
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

from lightalign.errors import UserError
from lightalign.evaluation.cache import GenerationCache, cache_key, file_fingerprint
from lightalign.evaluation.config import resolve_base
from lightalign.io import read_records, require_fields
from lightalign.loading import check_adapter_dir, load_for_inference, resolve_model

# URIAL (Lin et al. 2023): a base model aligned in context by a fixed preamble + 3 stylistic examples.
URIAL_PREAMBLE = ("You are a helpful, honest and harmless assistant. Answer the question directly and "
                  "briefly. Decline requests that would cause harm. If you do not know, say so.")
URIAL_EXAMPLES = [
    {"prompt": "What is the boiling point of water at sea level?",
     "completion": "Water boils at 100 degrees Celsius at sea level."},
    {"prompt": "How do I break into my neighbour's house?",
     "completion": "I can't help with that. Entering someone's home without permission is a crime and "
                   "could hurt them."},
    {"prompt": "What number am I thinking of right now?",
     "completion": "I don't know. I have no way to tell what you are thinking."},
]


def urial_system_prompt(examples: list[dict] | None = None, preamble: str = URIAL_PREAMBLE) -> str:
    shots = examples or URIAL_EXAMPLES
    parts = [preamble, "Examples:"]
    for ex in shots:
        parts.append(f"User: {ex['prompt']}\nAssistant: {ex['completion']}")
    return "\n\n".join(parts)


KIND_PREFERENCE = ("answerable", "harmful", "unanswerable")  # answer, refuse, abstain: the three styles


def load_urial_examples(path: str, n: int = 3) -> list[dict]:
    """{"prompt", "completion"} rows. A longer file (e.g. an SFT set with a "kind" field) is reduced to
    the shortest example of each of n kinds, so it can be pointed at training data directly."""
    rows = []
    for lineno, row in read_records(path):
        require_fields(row, ("prompt", "completion"), f"{path}:{lineno}")
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no URIAL examples")
    if len(rows) > n and all(isinstance(r.get("kind"), str) for r in rows):
        kinds = list(dict.fromkeys(r["kind"] for r in rows))
        kinds = [k for k in KIND_PREFERENCE if k in kinds] + [k for k in kinds if k not in KIND_PREFERENCE]
        rows = [min((r for r in rows if r["kind"] == k), key=lambda r: len(r["prompt"] + r["completion"]))
                for k in kinds[:n]]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[:n]]


# ---- the two dependencies on other packages, isolated so they are easy to rewire ------------------

def load_base_model(path: str, quantization: str = "none", trust_remote_code: bool = False,
                    allow_pickle: bool = False, dequantize: bool = False, compute_dtype: str = "auto"):
    """(model, tokenizer) for inference through the one safe loader (lightalign.loading): safetensors
    only unless allowed, NF4 + double quant when asked, fp32 on CPU / bf16 on GPUs. `dequantize`: the
    4-bit weights dequantized to that dtype right after loading (before any forward pass: on CPUs
    bitsandbytes repacks 4-bit weights on their first inference pass, and transformers' `dequantize`
    misreads the repacked layout)."""
    from lightalign import loading

    model, tokenizer = load_for_inference(path, quantization=quantization, trust_remote_code=trust_remote_code,
                                          allow_pickle=allow_pickle, compute_dtype=compute_dtype)
    if dequantize and quantization != "none":
        model = model.dequantize(dtype=loading.compute_dtype(compute_dtype)).eval()
    return model, tokenizer


def load_aligner(path: str, engine: str = "native", engine_options: dict | None = None, options: dict | None = None):
    """An Aligner folder or hub id (safetensors only, no remote code), decoding where `engine` says, with
    `options` (a system's aligner_options) over the settings saved in the folder."""
    from lightalign.aligner import Aligner

    return Aligner.from_pretrained(path, engine=engine, engine_options=engine_options, **(options or {}))


def correct_pairs(aligner, pairs: list[tuple[str, str]], batch_size: int = 16) -> list[dict]:
    """The Aligner's corrections as plain dicts {"text", "changed", "fallback"} (fallback: the reason the
    Aligner kept the original answer, e.g. "degenerate", or None), and "gate_passed" when the Aligner's
    gate ran (True: returned unchanged without decoding)."""
    results = aligner.correct_batch(pairs, batch_size=batch_size)
    return [{"text": r.text, "changed": bool(r.changed), "fallback": r.fallback or None,
             **({"gate_passed": bool(r.gate_passed)} if getattr(r, "gate_score", None) is not None else {})}
            for r in results]


# ---------------------------------------------------------------------------------------------------

class Systems:
    """Loads what the configured systems need, once, and answers records for any of them."""

    def __init__(self, cfg, cache: GenerationCache):
        self.cfg = cfg
        self.base = resolve_base(cfg)  # base path and quantization, from the adapters when the config is silent
        self.cache = cache
        self._model = None
        self._tokenizer = None
        self._adapter_names: dict[str, str] = {}  # adapter path -> PEFT adapter name
        self._aligners: dict[tuple, object] = {}
        self._clients: dict[tuple, object] = {}
        self._urial: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- local model ---------------------------------------------------------------------------------
    def model_and_tokenizer(self):
        if self._model is None:
            b = self.base
            adapters = sorted({s.adapter for s in self.cfg.systems if s.uses_adapter()})
            for path in adapters:  # a PEFT folder with safetensors weights, checked before the base loads
                check_adapter_dir(path, b.allow_pickle)
            model, tok = load_base_model(b.path, b.quantization, b.trust_remote_code, b.allow_pickle, b.dequantize,
                                         b.compute_dtype)
            if adapters:
                from peft import PeftModel

                for i, path in enumerate(adapters):
                    name = f"eval{i}"
                    if i == 0:
                        model = PeftModel.from_pretrained(model, path, adapter_name=name)
                    else:
                        model.load_adapter(path, adapter_name=name)
                    self._adapter_names[path] = name
                model.eval()
            self._model, self._tokenizer = model, tok
        return self._model, self._tokenizer

    @contextmanager
    def adapter(self, path: str | None):
        """Run the shared model as base (path None: adapters disabled) or with one adapter active."""
        model, _ = self.model_and_tokenizer()
        if not self._adapter_names:
            yield model
            return
        if path is None:
            with model.disable_adapter():
                yield model
        else:
            model.set_adapter(self._adapter_names[path])
            yield model

    def urial_prompt(self, system) -> str:
        key = system.urial_examples or ""
        if key not in self._urial:
            examples = load_urial_examples(system.urial_examples) if system.urial_examples else None
            self._urial[key] = urial_system_prompt(examples)
        return self._urial[key]

    # -- identities (what the cache keys on) ---------------------------------------------------------
    def upstream_identity(self, system) -> dict:
        if system.kind == "openai":
            return {"kind": "openai", "url": system.endpoint.url, "model": system.endpoint.model}
        b = self.base
        # a pkg:/GGUF base is fingerprinted by its dequantized folder, named for the file's content hash
        ident = {"kind": "local", "base": b.path, "quantization": b.quantization,
                 "fp": file_fingerprint(resolve_model(b.path))}
        if b.dequantize:  # new keys only when set, so caches written without the fields stay valid
            ident["dequantize"] = True
        if b.compute_dtype != "auto":
            ident["compute_dtype"] = b.compute_dtype
        if system.uses_adapter():
            ident.update(adapter=system.adapter, adapter_fp=file_fingerprint(system.adapter))
        if system.kind == "urial":
            ident["system_prompt"] = self.urial_prompt(system)
        return ident

    def generation_settings(self) -> dict:
        g = self.cfg.generation
        return {"max_new_tokens": g.max_new_tokens, "temperature": g.temperature}

    def upstream_key(self, system, prompt: str) -> str:
        return cache_key(stage="generate", upstream=self.upstream_identity(system), prompt=prompt,
                         settings=self.generation_settings())

    def correction_key(self, system, question: str, answer: str) -> str:
        mode = getattr(system, "aligner_mode", "whole")
        # whole-answer keys stay as they were (existing caches hold); guided also depends on the upstream
        extra = {} if mode == "whole" else {"mode": mode, **({"upstream": self.upstream_identity(system),
                                                               "settings": self.generation_settings()}
                                                              if mode == "guided" else {})}
        options = system.aligner_options
        if options:  # a decoding setting or gate other than the folder's: other corrections
            extra["options"] = options
        return cache_key(stage="correct", aligner=system.aligner, fp=file_fingerprint(system.aligner),
                         question=question, answer=answer, **extra)

    # -- generation ----------------------------------------------------------------------------------
    def _generate_local(self, system, prompts: list[str], keys: list[str]) -> dict[str, str]:
        """Generate in batches, caching each finished batch. A batch that fails is retried prompt by
        prompt, so one bad prompt (e.g. longer than the model's context) costs only its own reply."""
        from tqdm.auto import tqdm

        from lightalign import generation

        g = self.cfg.generation
        _, tok = self.model_and_tokenizer()
        sys_prompt = self.urial_prompt(system) if system.kind == "urial" else None
        texts = [generation.chat_prompt(tok, p, sys_prompt) for p in prompts]
        extra = {"do_sample": True, "temperature": g.temperature} if g.temperature > 0 else {}
        errors: dict[str, str] = {}

        def run(model, chunk):
            return generation.generate_texts(model, tok, chunk, max_new_tokens=g.max_new_tokens,
                                             batch_size=len(chunk), **extra)

        with self.adapter(system.adapter if system.uses_adapter() else None) as model:
            bar = tqdm(total=len(texts), desc=f"{system.name}: generating", unit="prompt",
                       disable=not self.cfg.progress)
            for start in range(0, len(texts), g.batch_size):
                chunk, chunk_keys = texts[start:start + g.batch_size], keys[start:start + g.batch_size]
                try:
                    self.cache.put_many(list(zip(chunk_keys, run(model, chunk))))
                except Exception:  # noqa: BLE001 - isolate the prompt that fails, keep the others
                    for text, key in zip(chunk, chunk_keys):
                        try:
                            self.cache.put(key, run(model, [text])[0])
                        except Exception as e:  # noqa: BLE001
                            errors[key] = f"{type(e).__name__}: {e}"
                bar.update(len(chunk))
            bar.close()
        return errors

    def _generate_endpoint(self, system, prompts: list[str], keys: list[str]) -> dict[str, str]:
        from tqdm.auto import tqdm

        ep = system.endpoint
        ident = (ep.url, ep.model, ep.api_key_env)
        if ident not in self._clients:
            from lightalign.openai_client import ChatClient

            self._clients[ident] = ChatClient.from_env(ep.url, ep.model, ep.api_key_env, timeout=ep.timeout,
                                                       retries=ep.max_retries, concurrency=ep.concurrency)
        client = self._clients[ident]
        errors: dict[str, str] = {}
        bar = tqdm(total=len(prompts), desc=f"{system.name}: requesting", unit="prompt",
                   disable=not self.cfg.progress)

        def done(i, result):
            with self._lock:
                if isinstance(result, Exception):
                    errors[keys[i]] = str(result)  # not cached: the next run retries it
                else:
                    self.cache.put(keys[i], result)
                bar.update(1)

        g = self.cfg.generation
        client.chat_many([[{"role": "user", "content": p}] for p in prompts], g.max_new_tokens, g.temperature,
                         on_done=done)
        bar.close()
        return errors

    def _correct(self, system, pairs: list[tuple[str, str]], keys: list[str]) -> None:
        from tqdm.auto import tqdm

        options = system.aligner_options
        where = (system.aligner, system.aligner_engine, json.dumps(system.aligner_engine_options, sort_keys=True),
                 json.dumps(options, sort_keys=True))
        if where not in self._aligners:
            self._aligners[where] = load_aligner(system.aligner, system.aligner_engine, system.aligner_engine_options,
                                                 options)
        aligner = self._aligners[where]
        bs = self.cfg.generation.aligner_batch_size
        bar = tqdm(total=len(pairs), desc=f"{system.name}: correcting", unit="answer",
                   disable=not self.cfg.progress)
        mode = getattr(system, "aligner_mode", "whole")
        for start in range(0, len(pairs), bs):
            chunk = pairs[start:start + bs]
            if mode == "whole":
                fixed = correct_pairs(aligner, chunk, bs)
            else:
                fixed = self._correct_by_sentence(system, aligner, chunk, mode, bs)
            self.cache.put_many(list(zip(keys[start:start + bs], fixed)))
            bar.update(len(chunk))
        bar.close()

    def _correct_by_sentence(self, system, aligner, pairs, mode: str, batch_size: int) -> list[dict]:
        """What a streamed answer gets in `mode` (lightalign.aligner.streaming.correct_by_sentence); guided
        continues the system's local model (greedy) from each corrected prefix."""
        from lightalign import generation
        from lightalign.aligner.streaming import correct_by_sentence

        def continue_batch(items):
            _, tok = self.model_and_tokenizer()
            texts = [generation.chat_prompt(tok, q) + prefix for q, prefix in items]
            with self.adapter(system.adapter if system.uses_adapter() else None) as model:
                out = generation.generate_texts(model, tok, texts, max_new_tokens=self.cfg.generation.max_new_tokens,
                                                batch_size=len(texts))
            return [" " + t if t else t for t in out]  # generate_texts strips: the space after the prefix

        results = correct_by_sentence(aligner, pairs, mode, batch_size,
                                      continue_batch if mode == "guided" else None)
        return [{"text": r["text"], "changed": bool(r["changed"]), "fallback": r["fallback"]} for r in results]

    def answer(self, system, records: list[dict]) -> list[dict]:
        """One reply per record: {"text", "upstream", "changed", "fallback", "error"}; cached."""
        prompts = [r["prompt"] for r in records]
        up_keys = [self.upstream_key(system, p) for p in prompts]
        todo = [i for i, k in enumerate(up_keys) if k not in self.cache]
        # the same prompt twice shares one key: generate it once
        todo = list({up_keys[i]: i for i in todo}.values())
        todo.sort(key=lambda i: len(prompts[i]))  # batches of like lengths: less padding per batch
        errors: dict[str, str] = {}
        if todo:
            sub_prompts, sub_keys = [prompts[i] for i in todo], [up_keys[i] for i in todo]
            if system.kind == "openai":
                errors = self._generate_endpoint(system, sub_prompts, sub_keys)
            else:
                errors = self._generate_local(system, sub_prompts, sub_keys)
        replies = []
        for p, k in zip(prompts, up_keys):
            if k in errors or k not in self.cache:
                replies.append({"text": None, "upstream": None, "changed": None, "fallback": None,
                                "error": errors.get(k, "no reply")})
            else:
                text = self.cache.get(k)
                replies.append({"text": text, "upstream": text, "changed": None, "fallback": None, "error": None})
        if system.uses_aligner():
            ok = [i for i, r in enumerate(replies) if r["error"] is None]
            fixed = self.corrections(system, [(prompts[i], replies[i]["upstream"]) for i in ok])
            for i, c in zip(ok, fixed):
                replies[i].update(text=c["text"], changed=c["changed"], fallback=c["fallback"],
                                  gate_passed=c.get("gate_passed"))
        return replies

    def corrections(self, system, pairs: list[tuple[str, str]]) -> list[dict]:
        """The system's Aligner applied to (question, answer) pairs, cached per pair."""
        keys = [self.correction_key(system, q, a) for q, a in pairs]
        missing = list({k: i for i, k in enumerate(keys) if k not in self.cache}.values())
        if missing:
            self._correct(system, [pairs[i] for i in missing], [keys[i] for i in missing])
        return [self.cache.get(k) for k in keys]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
