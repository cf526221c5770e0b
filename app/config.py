"""What the app serves and how: a dataclass loadable from YAML (lightalign.config.load_config).

Paths are read as given (relative ones from the working directory, as in every recipe). A YAML
holding every part, e.g.

    base: /models/base                 # model folder (transformers layout, safetensors)
    adapter: /models/adapters/dpo      # PEFT adapter for that base; none (or unset) = no adapter column
    aligner: /models/aligner           # Aligner folder; none (or unset) = no correction columns
    examples: /data/prompts.jsonl      # rows with "prompt" and optionally "kind"
    examples_group_by: set             # the rows' field the page groups examples by (default: kind)
    examples_titles: {harmbench: HarmBench}   # a group's title (default: its value, capitalized)
    judge: mypackage.judges:make_judge # optional rule judge (see lightalign.plugins)
    judge_options: {threshold: 3}
    rewrites: [polite, typo, {name: hey, template: "Hey, {prompt}"}]   # rewording rules (unset = built-ins)
    rewordings: 4                      # rule-made wordings the side-by-side table shows

is what `lightalign app --config FILE` serves; with neither --config nor --base, the app reads
DEFAULT_CONFIG when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightalign.bounds import at_most

DEFAULT_CONFIG = "runs/minilab/app.yaml"
OFF = ("", "none", "off")


def _part(value: str | None) -> Path | None:
    """A model part's folder, or None when it is unset or switched off ("none", "off")."""
    if value is None or value.strip().lower() in OFF:
        return None
    return Path(value)


@dataclass
class AppConfig:
    base: str | None = None             # model folder (transformers layout); the app needs one
    adapter: str | None = None          # PEFT adapter folder on that base; unset or "none" = off
    aligner: str | None = None          # Aligner folder; unset or "none" = off
    quantization: Literal["nf4", "none"] = "nf4"    # base weights: 4-bit NF4 (as QLoRA trains) or full precision
    trust_remote_code: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    max_prompt_chars: int = 2000
    max_new_tokens: int = 64            # default of the slider; its maximum is 4x this
    concurrency_limit: int = 1          # generations at once, shared by every model-bound event
    max_queue: int = 16                 # requests waiting beyond that are turned away
    examples: str | None = None         # JSONL/JSON rows with "prompt" and optionally "kind"
    examples_per_kind: int = 3          # how many the page shows per group
    # the rows' field the examples are grouped by (one column of examples per value), and the groups'
    # titles: a track whose rows say both "kind" (harmful/safe) and "set" (harmbench/edgy/benign) picks
    examples_group_by: str = "kind"
    examples_titles: dict[str, str] = field(default_factory=dict)   # value -> title; unset: capitalized
    judge: str | None = None            # "package.module:callable" returning a rule judge
    judge_options: dict[str, Any] = field(default_factory=dict)   # keyword arguments of that callable
    rewrites: list[Any] | None = None   # rewording rules as in eval's robustness.rewrites; None = built-ins
    rewordings: int = 4                 # how many rule-made wordings the rewordings table shows
    # whole: the Aligner column appears once the base answer is complete; sentence: it fills sentence by
    # sentence while the base streams; guided: the base also continues from each corrected sentence
    aligner_mode: Literal["whole", "sentence", "guided"] = "whole"

    def validate(self) -> None:
        for name in ("max_prompt_chars", "max_new_tokens", "concurrency_limit", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"field 'port' must be a TCP port (0-65535), got {self.port}")
        if self.examples_per_kind < 0:
            raise ValueError("field 'examples_per_kind' must be >= 0")
        if not self.examples_group_by.strip():
            raise ValueError("field 'examples_group_by' must name a field of the example rows, got ''")
        bad = [k for k, v in self.examples_titles.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"field 'examples_titles': the title of {bad[0]!r} must be non-empty text")
        if self.judge and not self.examples_path:
            raise ValueError("field 'judge' needs 'examples': the judge scores replies to the example prompts")
        if self.judge_options and not self.judge:
            raise ValueError("field 'judge_options' is set but 'judge' is not")
        if self.aligner_mode not in ("whole", "sentence", "guided"):
            raise ValueError(f"aligner_mode must be whole, sentence or guided, got {self.aligner_mode!r}")
        if self.rewordings < 0:
            raise ValueError(f"field 'rewordings' must be >= 0, got {self.rewordings}")
        # far above any sensible setting; generation is further cut to the model's context (app.models)
        at_most(self, "field ", max_prompt_chars=1_000_000, max_new_tokens=2**18, concurrency_limit=256,
                max_queue=100_000, examples_per_kind=10_000, rewordings=1000)
        self.rewriters()  # a bad rule is named now, not at the first click

    def rewriters(self) -> list:
        """The rewording rules of `rewrites` (lightalign.evaluation.rewrites, the eval's own rules)."""
        from lightalign.errors import UserError
        from lightalign.evaluation.rewrites import build_rewriters

        try:
            return build_rewriters(self.rewrites, where="rewrites")
        except UserError as e:  # from_dict adds the file's name to a ValueError
            raise ValueError(str(e)) from None

    @property
    def base_path(self) -> Path | None:
        return _part(self.base)

    @property
    def adapter_path(self) -> Path | None:
        return _part(self.adapter)

    @property
    def aligner_path(self) -> Path | None:
        return _part(self.aligner)

    @property
    def examples_path(self) -> Path | None:
        return _part(self.examples)
