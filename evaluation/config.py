"""`lightalign eval` config: typed dataclasses read from YAML by lightalign.config.

A config names the base model (loaded once), the systems to compare, one dataset, the judges, the
generation settings and the output folder. `validate()` checks cross-field rules (an adapter system
needs an adapter path, ...) so a bad config fails before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SystemKind = Literal["base", "adapter", "aligner", "adapter+aligner", "urial", "openai"]
DatasetName = Literal["lab", "beavertails", "harmfulqa", "xstest", "pku-saferlhf", "jsonl"]
JudgeKind = Literal["lab", "refusal", "reward", "flask", "pairwise"]


@dataclass
class BaseModel:
    path: str = ""
    quantization: Literal["none", "nf4"] = "none"  # nf4 = 4-bit NF4 + double quant (bitsandbytes)
    trust_remote_code: bool = False
    allow_pickle: bool = False  # refuse pytorch_model.bin unless the user opts in


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


@dataclass
class System:
    name: str
    kind: SystemKind
    adapter: str | None = None        # PEFT adapter folder (adapter kinds)
    aligner: str | None = None        # Aligner folder (aligner kinds; optional on urial/openai to correct them)
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
        if self.adapter and not self.uses_adapter():
            raise ValueError(f"{where}: 'adapter' is set but kind {self.kind!r} does not use it")


@dataclass
class Dataset:
    name: DatasetName = "jsonl"
    path: str = ""              # local file (.jsonl/.json/.csv/.parquet) or a hub id (needs `datasets` + network)
    split: str = "test"         # hub split
    prompt_field: str = "prompt"  # generic JSONL only
    limit: int | None = None    # first N prompts (after a seeded shuffle when shuffle=true)
    shuffle: bool = False
    seed: int = 0


@dataclass
class Judge:
    kind: JudgeKind
    world: str | None = None          # lab: world.json
    path: str | None = None           # reward: AutoModelForSequenceClassification folder
    endpoint: Endpoint | None = None  # flask / pairwise
    skills: list[str] = field(default_factory=list)  # flask: subset of the 12 skills (default: 3 per prompt kind)
    reference: str = "base"           # pairwise: every other system is compared against this one
    batch_size: int = 16              # reward model batch

    def check(self, i: int) -> None:
        where = f"judges[{i}] ({self.kind})"
        if self.kind == "lab" and not self.world:
            raise ValueError(f"{where}: needs 'world' (the lab's data/world.json)")
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


@dataclass
class Tax:
    """Alignment tax: per-token NLL of held-out capability text, base vs base + adapter."""
    capability: str | None = None  # JSONL of {"text"}
    max_docs: int | None = None
    max_length: int = 512
    batch_size: int = 8
    aligner_eval: str | None = None  # JSONL of {"question","answer","correction"}: edit rate and do-no-harm
    max_triples: int | None = None


@dataclass
class EvalConfig:
    systems: list[System]
    dataset: Dataset
    judges: list[Judge]
    base: BaseModel = field(default_factory=BaseModel)
    generation: Generation = field(default_factory=Generation)
    tax: Tax = field(default_factory=Tax)
    output: str = "runs/eval"
    bootstrap: int = 1000  # resamples for the confidence intervals
    seed: int = 0
    progress: bool = True
    title: str = "lightalign evaluation"
    baseline: str | None = None  # gains are reported against this system (default: the first of kind base)

    def validate(self) -> None:
        if not self.systems:
            raise ValueError("'systems' must list at least one system")
        names = [s.name for s in self.systems]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"systems: duplicate names {dupes}")
        for i, s in enumerate(self.systems):
            s.check(i)
        if any(s.kind != "openai" for s in self.systems) and not self.base.path:
            raise ValueError("base.path is required for base/adapter/aligner/urial systems")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a system ({', '.join(names)})")
        if not self.judges:
            raise ValueError("'judges' must list at least one judge")
        for i, j in enumerate(self.judges):
            j.check(i)
            if j.kind == "pairwise" and j.reference not in names:
                raise ValueError(f"judges[{i}] (pairwise): reference {j.reference!r} is not a system "
                                 f"({', '.join(names)})")
        if not self.dataset.path:
            raise ValueError(f"dataset.path is required (a local file or a hub id) for dataset {self.dataset.name!r}")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be >= 0")
