"""Alignment adapters: QLoRA SFT, DPO and ORPO on a frozen 4-bit base.

One self-contained recipe module per method (`sft`, `dpo`, `orpo`: each a `Config` dataclass and
`train(cfg) -> Path`), run by `lightalign.training` (recipe sections, the recipe loader, resume,
checkpoints, metrics) on models loaded by `lightalign.loading`. Beside them: `datasets` (dataset
schemas), `labels` (label-mask audit), `batching` (length-grouped batches), `estimate` (memory),
`merge`.
Nothing here imports torch at package import time.
"""
