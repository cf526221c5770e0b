"""The Aligner: a small model that post-edits any upstream model's answers (Ji et al. 2024).

    from lightalign.aligner import Aligner
    aligner = Aligner.from_pretrained("path-or-hub-id")
    aligner.correct(question, answer).text

Importing this package is cheap: torch and transformers load when an attribute is first used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Aligner": "lightalign.aligner.model",
    "Correction": "lightalign.aligner.model",
    "TEMPLATES": "lightalign.aligner.templates",
    "get_template": "lightalign.aligner.templates",
    "load_triples": "lightalign.aligner.data",
    "LocalModelUpstream": "lightalign.aligner.connectors",
    "OpenAICompatibleUpstream": "lightalign.aligner.connectors",
    "FileUpstream": "lightalign.aligner.connectors",
    "UpstreamError": "lightalign.aligner.connectors",
    "to_sft": "lightalign.aligner.weak_to_strong",
    "to_dpo": "lightalign.aligner.weak_to_strong",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightalign.aligner' has no attribute {name!r}")
