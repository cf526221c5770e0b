"""What the app serves and how: a dataclass loadable from YAML (lightalign.config.load_config).

Model paths left empty fall back to the mini-lab's (`<lab>/base`, `<lab>/adapters/dpo`,
`<lab>/aligner`), so `lightalign app` with no arguments serves the lab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_LAB = "runs/minilab"
LAB_ADAPTER = "adapters/dpo"


@dataclass
class AppConfig:
    lab: str = DEFAULT_LAB              # example prompts + judges come from <lab>/data
    base: str | None = None             # HF folder; default <lab>/base
    adapter: str | None = None          # PEFT adapter folder; default <lab>/adapters/dpo; "none" = off
    aligner: str | None = None          # Aligner folder; default <lab>/aligner; "none" = off
    quantization: Literal["nf4", "none"] = "nf4"    # as the QLoRA adapters were trained; none = fp32/bf16 base
    trust_remote_code: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    max_prompt_chars: int = 2000
    max_new_tokens: int = 64            # default of the slider; its maximum is 4x this
    concurrency_limit: int = 1          # generations at once, shared by every model-bound event
    max_queue: int = 16                 # requests waiting beyond that are turned away
    examples_per_kind: int = 3

    def validate(self) -> None:
        for name in ("max_prompt_chars", "max_new_tokens", "concurrency_limit", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"field 'port' must be a TCP port (0-65535), got {self.port}")
        if self.examples_per_kind < 0:
            raise ValueError("field 'examples_per_kind' must be >= 0")

    @property
    def lab_dir(self) -> Path:
        return Path(self.lab)

    def _part(self, value: str | None, default: str) -> Path | None:
        if value is not None and value.strip().lower() in ("", "none", "off"):
            return None
        return Path(value) if value is not None else self.lab_dir / default

    @property
    def base_path(self) -> Path:
        return Path(self.base) if self.base else self.lab_dir / "base"

    @property
    def adapter_path(self) -> Path | None:
        return self._part(self.adapter, LAB_ADAPTER)

    @property
    def aligner_path(self) -> Path | None:
        return self._part(self.aligner, "aligner")

    def uses_lab_base(self) -> bool:
        return not self.base
