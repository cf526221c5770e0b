"""`lightalign eval` config: typed dataclasses read from YAML by lightalign.config.

A config names the base model (loaded once), the systems to compare, one dataset, the judges, the
generation settings and the output folder, and optionally `robustness` (every prompt also asked in
rewordings, see evaluation.robustness). `validate()` checks cross-field rules (an adapter system
needs an adapter path, ...) so a bad config fails before any model loads.

Adapter folders describe themselves: when `base.path` or `base.quantization` is left out, it comes
from the adapters (adapter_config.json's base_model_name_or_path, and run_config.json's
model.quantization written by training); see `resolve_base`.

Judges: `refusal` (string match), `reward` (a reward model), `flask` and `pairwise` (an LLM judge
behind an endpoint), and `python`: any rule judge of your own, `{kind: python, factory:
"package.module:callable", options: {...}}`. The factory is called with `options` as keyword
arguments and returns an object with `name`, `metrics` (a list of metric names) and
`score(records, replies) -> list[{metric: True | False | None}]` (None: the metric does not apply to
that record), the protocol of evaluation.judge_rules.RefusalJudge; see lightalign.plugins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightalign import bounds, schemas
from lightalign.bounds import MAX_BATCH, at_most
from lightalign.errors import UserError, deprecated
from lightalign.loading import adapter_base_name

SystemKind = Literal["base", "adapter", "aligner", "adapter+aligner", "urial", "openai"]
JudgeKind = Literal["refusal", "python", "reward", "flask", "pairwise"]
Quantization = Literal["none", "nf4"]  # nf4 = 4-bit NF4 + double quant (bitsandbytes)


@dataclass
class BaseModel:
    path: str = ""                         # default: the base the adapters name (adapter_config.json)
    quantization: Quantization | None = None  # default: how the adapters' base was trained (else "none")
    # nf4 only: dequantize the 4-bit weights once after loading. Same weights the adapters were trained
    # against (outputs equal to the unpacked 4-bit model), at full-precision speed and memory: on a CPU,
    # 4-bit matmuls generate several times slower than fp32 ones.
    dequantize: bool = False
    # auto: bf16 on GPUs that support it, else fp32 (as training's model.compute_dtype); bf16 also suits
    # CPUs with AVX512-BF16 or AMX, where it generated 1.75x faster than fp32 here
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False  # refuse pytorch_model.bin unless the user opts in


def check_systems(systems: list, empty: str) -> None:
    """A non-empty list of systems (each with .name and .check(i)) under unique names."""
    if not systems:
        raise ValueError(empty)
    names = [s.name for s in systems]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"systems: duplicate names {dupes}")
    for i, s in enumerate(systems):
        s.check(i)


def check_min(obj, where: str, **minimums) -> None:
    """Each named number of `obj` (None allowed: unset) must be >= its minimum."""
    for name, low in minimums.items():
        value = getattr(obj, name)
        if value is not None and not value >= low:  # `not >=` also refuses NaN
            raise ValueError(f"{where}{name} must be >= {low}, got {value}")


@dataclass
class Endpoint:
    """An OpenAI-compatible server: `url` is the base (…/v1), the client posts to url/chat/completions."""
    url: str = ""
    model: str = ""
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    timeout: float = 60.0
    max_retries: int = 2
    concurrency: int = 4

    def check(self, where: str) -> None:
        if not self.url:
            raise ValueError(f"{where}.url is required")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{where}.url must start with http:// or https://, got {self.url!r}")
        if not self.model:
            raise ValueError(f"{where}.model is required")
        check_min(self, f"{where}.", max_retries=0, concurrency=1)
        at_most(self, f"{where}.", max_retries=20, concurrency=256, timeout=3600)
        if not self.timeout > 0:
            raise ValueError(f"{where}.timeout must be > 0 seconds, got {self.timeout}")


ALIGNER_OPTIONS = ("copy_bias", "copy_min_prob", "max_new_tokens", "gate", "gate_threshold")


@dataclass
class System:
    name: str
    kind: SystemKind
    adapter: str | None = None        # PEFT adapter folder (adapter kinds)
    aligner: str | None = None        # Aligner folder (aligner kinds; optional on urial/openai to correct them)
    aligner_engine: Literal["native", "vllm", "remote"] = "native"  # where the Aligner decodes
    aligner_engine_options: dict = field(default_factory=dict)  # vllm.LLM arguments; remote: url, model, key_env
    # whole: correct the whole answer (default); sentence / guided: what a streamed answer gets
    # (lightalign.aligner.streaming); guided continues the upstream from the corrected prefix (local kinds)
    aligner_mode: Literal["whole", "sentence", "guided"] = "whole"
    # Aligner.from_pretrained settings over the folder's own, to compare decodings of one Aligner in one
    # run: copy_bias, copy_min_prob, max_new_tokens, gate (false: no gate), gate_threshold
    aligner_options: dict = field(default_factory=dict)
    endpoint: Endpoint | None = None  # openai kind
    urial_examples: str | None = None  # JSONL of {"prompt","completion"} stylistic examples (urial kind)

    def uses_adapter(self) -> bool:
        return self.kind in ("adapter", "adapter+aligner")

    def uses_aligner(self) -> bool:
        return self.aligner is not None

    def check(self, i: int) -> None:
        where = f"systems[{i}] ({self.name})"
        if self.uses_adapter() and not self.adapter:
            raise ValueError(f"{where}: kind {self.kind!r} needs 'adapter' (a PEFT adapter folder)")
        if self.kind in ("aligner", "adapter+aligner") and not self.aligner:
            raise ValueError(f"{where}: kind {self.kind!r} needs 'aligner' (an Aligner folder)")
        if self.kind == "openai":
            if self.endpoint is None:
                raise ValueError(f"{where}: kind 'openai' needs an 'endpoint' section (url, model)")
            self.endpoint.check(f"systems[{i}].endpoint")
        if self.aligner_mode not in ("whole", "sentence", "guided"):
            raise ValueError(f"{where}: aligner_mode must be whole, sentence or guided, got {self.aligner_mode!r}")
        if self.aligner_mode != "whole" and not self.aligner:
            raise ValueError(f"{where}: aligner_mode is set but the system has no 'aligner'")
        if self.aligner_mode == "guided" and self.kind not in ("aligner", "adapter+aligner"):
            raise ValueError(f"{where}: aligner_mode 'guided' continues a local upstream from the corrected "
                             f"prefix: kinds aligner and adapter+aligner only, not {self.kind!r}")
        if self.aligner_options and not self.aligner:
            raise ValueError(f"{where}: aligner_options is set but the system has no 'aligner'")
        unknown = sorted(set(self.aligner_options) - set(ALIGNER_OPTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown aligner_options {', '.join(unknown)}: use "
                             f"{', '.join(ALIGNER_OPTIONS)}")
        if self.aligner_engine != "native" and not self.aligner:
            raise ValueError(f"{where}: aligner_engine is set but the system has no 'aligner'")
        if self.aligner_engine == "remote" and not self.aligner_engine_options.get("url"):
            raise ValueError(f"{where}: aligner_engine 'remote' needs aligner_engine_options.url (the server "
                             "hosting the Aligner)")
        if self.adapter and not self.uses_adapter():
            raise ValueError(f"{where}: 'adapter' is set but kind {self.kind!r} does not use it")


@dataclass
class Dataset:
    schema: str = "prompt_only"  # any schema of lightalign.schemas with prompts (beavertails, xstest, ...)
    path: str = ""              # local file (.jsonl/.json/.csv/.parquet) or a hub id (needs `datasets` + network)
    split: str = "test"         # hub split
    prompt_field: str = "prompt"  # prompt_only / prompt_completion / preference: the prompt column
    limit: int | None = None    # first N prompts (after a seeded shuffle when shuffle=true)
    shuffle: bool = False
    seed: int = 0
    group_by: list[str] = field(default_factory=list)  # record fields to break every rule metric down by
    name: str | None = None     # deprecated spelling of `schema`

    def validate(self) -> None:
        if self.name is not None:
            deprecated("dataset.name is now dataset.schema", once=True)
            self.schema, self.name = self.name, None
        try:
            self.schema = schemas.schema_name(self.schema, "dataset.schema", "prompts")
        except UserError as e:
            raise ValueError(str(e)) from None
        check_min(self, "dataset.", limit=1)


@dataclass
class Judge:
    kind: JudgeKind
    factory: str | None = None        # python: "package.module:callable" returning the judge
    options: dict[str, Any] = field(default_factory=dict)  # python: keyword arguments of the factory
    path: str | None = None           # reward: AutoModelForSequenceClassification folder
    endpoint: Endpoint | None = None  # flask / pairwise
    skills: list[str] = field(default_factory=list)  # flask: subset of the 12 skills (default: 3 per prompt kind)
    reference: str = "base"           # pairwise: every other system is compared against this one
    batch_size: int = 16              # reward model batch

    def check(self, i: int) -> None:
        where = f"judges[{i}] ({self.kind})"
        check_min(self, f"{where}: ", batch_size=1)
        if self.kind == "python" and not self.factory:
            raise ValueError(f"{where}: needs 'factory' (\"package.module:callable\" returning the judge)")
        if self.kind != "python" and (self.factory or self.options):
            raise ValueError(f"{where}: 'factory' and 'options' belong to kind 'python'")
        if self.kind == "reward" and not self.path:
            raise ValueError(f"{where}: needs 'path' (a sequence-classification reward model folder)")
        if self.kind in ("flask", "pairwise"):
            if self.endpoint is None:
                raise ValueError(f"{where}: needs an 'endpoint' section (url, model)")
            self.endpoint.check(f"judges[{i}].endpoint")
        if self.kind == "flask" and self.skills:
            from lightalign.evaluation.judge_llm import FLASK_SKILLS

            unknown = [s for s in self.skills if s not in FLASK_SKILLS]
            if unknown:
                raise ValueError(f"{where}: unknown skills {unknown}; known: {', '.join(FLASK_SKILLS)}")


@dataclass
class Generation:
    max_new_tokens: int = 128
    batch_size: int = 16
    temperature: float = 0.0  # 0 = greedy (reproducible, and cacheable)
    aligner_batch_size: int = 16

    def validate(self) -> None:
        check_min(self, "generation.", max_new_tokens=1, batch_size=1, aligner_batch_size=1, temperature=0)
        at_most(self, "generation.", batch_size=MAX_BATCH, aligner_batch_size=MAX_BATCH)


@dataclass
class Tax:
    """Alignment tax: per-token NLL of held-out capability text, base vs base + adapter."""
    capability: str | None = None  # JSONL of {"text"}
    max_docs: int | None = None
    max_length: int = 512
    batch_size: int = 8
    aligner_eval: str | None = None  # triples ({"question","answer","correction"}, or any schema that gives them)
    max_triples: int | None = None

    def validate(self) -> None:
        check_min(self, "tax.", max_docs=1, max_length=8, batch_size=1, max_triples=1)
        at_most(self, "tax.", batch_size=MAX_BATCH)


@dataclass
class Robustness:
    """Rephrasing robustness: each prompt is also asked in rewordings (see evaluation.rewrites and
    evaluation.robustness). An absent section turns it off."""
    rewrites: list[Any] | None = None  # built-in rule names and {name, template|pattern|factory} dicts; None: all
    per_prompt: int = 4                # rewordings asked per prompt (a seeded sample of those that apply)
    max_prompts: int | None = None     # measure on N prompts only (a seeded sample), to bound cost
    endpoint: Endpoint | None = None   # optional: a chat model also rewrites each prompt
    endpoint_rewrites: int = 2         # rewrites asked of the endpoint per prompt

    def validate(self) -> None:
        from lightalign.evaluation.rewrites import check_specs

        check_specs(self.rewrites, "robustness.rewrites")
        check_min(self, "robustness.", per_prompt=1, max_prompts=1, endpoint_rewrites=1)
        at_most(self, "robustness.", per_prompt=1000, endpoint_rewrites=100)
        if self.endpoint is not None:
            self.endpoint.check("robustness.endpoint")


@dataclass
class EvalConfig:
    systems: list[System]
    dataset: Dataset
    judges: list[Judge]
    base: BaseModel = field(default_factory=BaseModel)
    generation: Generation = field(default_factory=Generation)
    tax: Tax = field(default_factory=Tax)
    robustness: Robustness | None = None  # rephrasing robustness (off when absent)
    output: str = "runs/eval"
    bootstrap: int = 1000  # resamples for the confidence intervals
    seed: int = 0
    progress: bool = True
    title: str = "lightalign evaluation"
    baseline: str | None = None  # gains are reported against this system (default: the first of kind base)

    def validate(self) -> None:
        check_systems(self.systems, "'systems' must list at least one system")
        names = [s.name for s in self.systems]
        if any(s.kind != "openai" for s in self.systems) and not self.base.path \
                and not any(s.uses_adapter() for s in self.systems):
            raise ValueError("base.path is required for base/aligner/urial systems (adapter systems name "
                             "their base themselves)")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a system ({', '.join(names)})")
        if not self.judges:
            raise ValueError("'judges' must list at least one judge")
        for i, j in enumerate(self.judges):
            j.check(i)
            if j.kind == "pairwise" and j.reference not in names:
                raise ValueError(f"judges[{i}] (pairwise): reference {j.reference!r} is not a system "
                                 f"({', '.join(names)})")
        if self.robustness is not None and not any(j.kind in ("refusal", "python") for j in self.judges):
            raise ValueError("robustness: the rewordings are judged by the rule judges only; add one to 'judges' "
                             "(kind refusal or python)")
        if not self.dataset.path:
            raise ValueError(f"dataset.path is required (a local file or a hub id) for schema {self.dataset.schema!r}")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be >= 0")
        at_most(self, "", bootstrap=100_000)  # resamples x prompts x systems run on one core


# ---- self-describing adapter folders ----------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def adapter_base(adapter: str) -> str | None:
    """The base model an adapter folder names (lightalign.loading.adapter_base_name)."""
    return adapter_base_name(adapter)


def adapter_quantization(adapter: str) -> str | None:
    """How the adapter's base was loaded in training (run_config.json model.quantization): the adapter
    is evaluated on the same weights."""
    model = (_read_json(Path(adapter) / "run_config.json") or {}).get("model")
    value = model.get("quantization") if isinstance(model, dict) else None
    return value if value in ("none", "nf4") else None


def _agreed(what: str, found: dict[str, str | None], key: str) -> str | None:
    values = {v for v in found.values() if v is not None}
    if len(values) > 1:
        listed = "; ".join(f"{a}: {v}" for a, v in found.items() if v is not None)
        raise UserError(f"the adapters disagree on their {what} ({listed}): set {key} in the eval config")
    return values.pop() if values else None


def resolve_base(cfg: EvalConfig) -> BaseModel:
    """`cfg.base` with an unset path or quantization filled in from the adapter folders; a base path
    still unknown then is a UserError."""
    adapters = sorted({s.adapter for s in cfg.systems if s.uses_adapter()})
    path = cfg.base.path or _agreed("base model", {a: adapter_base(a) for a in adapters}, "base.path")
    quantization = cfg.base.quantization or _agreed(
        "quantization", {a: adapter_quantization(a) for a in adapters}, "base.quantization") or "none"
    if not path and any(s.kind != "openai" for s in cfg.systems):
        raise UserError(f"base.path is not set and the adapters ({', '.join(adapters)}) do not name their base "
                        "(adapter_config.json base_model_name_or_path): set base.path")
    if path:
        check_sizes(cfg, path)
    return replace(cfg.base, path=path or "", quantization=quantization)


def check_sizes(cfg: EvalConfig, base: str) -> None:
    """Generation and tax lengths within the base's context length, and their batches' rough memory (fp32
    KV cache of a generation batch; logits of a tax batch) within the machine's, before any model loads."""
    config = bounds.model_config(base)
    context = bounds.context_length(config)
    g, t = cfg.generation, cfg.tax
    bounds.check_length(g.max_new_tokens, "generation.max_new_tokens", context, base)
    if t.capability:
        bounds.check_length(t.max_length, "tax.max_length", context, base)
    kv = bounds.kv_bytes_per_token(config)
    if kv:
        bounds.check_memory(g.batch_size * g.max_new_tokens * kv,
                            f"generation.batch_size={g.batch_size} x generation.max_new_tokens={g.max_new_tokens}",
                            "lower generation.batch_size")
        if t.capability:
            per_token = kv + 4 * int(config.get("vocab_size") or 0)
            bounds.check_memory(t.batch_size * t.max_length * per_token,
                                f"tax.batch_size={t.batch_size} x tax.max_length={t.max_length}", "lower tax.batch_size")
