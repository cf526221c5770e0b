"""Alignment adapters: QLoRA SFT, DPO and ORPO on a frozen 4-bit base.

One self-contained recipe module per method (`sft`, `dpo`, `orpo`: each a `Config` dataclass and
`train(cfg) -> Path`), with the small shared pieces beside them: `sections` (recipe sections),
`loading` (4-bit base, tokenizer, LoRA config), `datasets` (hub/lab schemas), `runs` (resume,
checkpoints, metrics), `estimate` (memory), `merge` and `lab_stage` (the mini-lab hook).
Nothing here imports torch at package import time.
"""
