"""lightalign: cheap, gentle LLM alignment.

Two halves that work apart and together:
- ``lightalign.adapters``: LoRA/QLoRA alignment adapters (SFT, DPO, ORPO) on a frozen 4-bit base.
- ``lightalign.aligner``: a small model that post-edits any upstream model's answers.

The mini-lab (``lightalign.lab``) is a synthetic world with tiny models, so that everything runs
and is measured on a CPU. Importing this package is cheap: heavy libraries load on first use.
"""

__version__ = "0.1.0"
