"""The recipe sections every training method shares: model / data / lora / training.

SFT, DPO, ORPO and the Aligner compose these into their own `Config`; `lightalign.config.from_dict`
turns the YAML into them and names any unknown or mistyped key. `validate()` catches values that
have the right type but make no sense (r=0, a missing data source), before any model loads.
A method whose defaults differ (the Aligner trains full-precision models by default) subclasses a
section and changes only the defaults, so every method reads the same key names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from lightalign.bounds import MAX_BATCH, MAX_LENGTH, at_most
from lightalign.errors import UserError
from lightalign.schemas import schema_name


@dataclass
class ModelSection:
    name_or_path: str
    quantization: Literal["nf4", "none"] = "nf4"   # "none" = 16-bit LoRA (fp32 on CPU)
    double_quant: bool = True
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPUs that have it, else fp32
    # dtype the packed 4-bit weights are stored in: FSDP + QLoRA needs the compute dtype (bf16) so they shard
    quant_storage: Literal["uint8", "bf16", "fp16", "fp32"] = "uint8"
    trust_remote_code: bool = False
    allow_pickle: bool = False                       # refuse .bin/.pt weights unless the user opts in
    revision: Optional[str] = None
    upcast_non_quantized: bool = True                # PEFT's prepare_model_for_kbit_training: fp32 norms/embeddings
    attn_implementation: Optional[str] = "sdpa"      # null: the model's own default
    # a GGUF file inside the folder name_or_path (name_or_path may also name a GGUF file itself, or
    # pkg:<package>/<path> a file or folder shipped in an installed package); dequantized once, then cached
    gguf_file: Optional[str] = None

    def validate(self):
        if not self.name_or_path.strip():
            raise ValueError("model.name_or_path must name a local folder, a GGUF file, pkg:<package>/<path> "
                             "or a hub id" + (f" (model.gguf_file={self.gguf_file} needs its folder)"
                                              if self.gguf_file else ""))
        if self.gguf_file:
            if Path(self.gguf_file).is_absolute():
                raise ValueError(f"model.gguf_file must be a file name inside the folder model.name_or_path, "
                                 f"got the path {self.gguf_file} (set model.name_or_path to a GGUF path instead)")
            if self.name_or_path.lower().endswith(".gguf"):
                raise ValueError(f"model.gguf_file ({self.gguf_file}) names a file inside a folder, but "
                                 f"model.name_or_path is already a GGUF file ({self.name_or_path})")
            # one spelling from here on: every reader of name_or_path (tokenizer, saved base name) sees the file
            self.name_or_path = f"{self.name_or_path.rstrip('/')}/{self.gguf_file}"
            self.gguf_file = None
        if self.quant_storage != "uint8":
            if self.quantization == "none":
                raise ValueError("model.quant_storage is for 4-bit weights: it needs model.quantization=nf4")
            if self.compute_dtype not in ("auto", self.quant_storage):
                raise ValueError(f"model.quant_storage={self.quant_storage} must equal model.compute_dtype "
                                 f"({self.compute_dtype}): FSDP shards a layer only when all its weights share "
                                 "one dtype")


@dataclass
class LoraSection:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: Union[str, list[str]] = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False
    init_from: Optional[str] = None  # continue from this adapter (e.g. DPO after SFT); r/alpha then come from it
    # false: full fine-tune of an unquantized base (a comparison baseline, not the memory-light path)
    enabled: bool = True

    def validate(self):
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("lora.target_modules must not be empty (use 'all-linear')")


@dataclass
class DataSection:
    path: Optional[str] = None        # local .jsonl/.json/.parquet in `schema`
    hub_id: Optional[str] = None      # e.g. PKU-Alignment/PKU-SafeRLHF (needs the dataset hub)
    hub_config: Optional[str] = None
    split: str = "train"
    schema: str = "prompt_completion"  # a name in lightalign.schemas (prompt_completion, preference, messages, ...)
    preference: Literal["safer", "better"] = "safer"   # PKU-SafeRLHF: which label picks `chosen`
    keep_unsafe_pairs: bool = False    # PKU-SafeRLHF: keep pairs whose answers are both unsafe (skipped by default)
    max_rows: Optional[int] = None
    max_length: int = 512
    system_prompt: Optional[str] = None

    VIEW = None  # the rows this method reads, when every recipe using the section reads the same

    def validate(self):
        try:
            self.schema = schema_name(self.schema, "data.schema", self.VIEW)
        except UserError as e:
            raise ValueError(str(e)) from None
        if bool(self.path) == bool(self.hub_id):
            raise ValueError("set exactly one of data.path (a local file) or data.hub_id (a hub dataset)")
        if self.max_length < 8:
            raise ValueError(f"data.max_length must be >= 8, got {self.max_length}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"data.max_rows must be >= 1, got {self.max_rows}")
        at_most(self, "data.", max_length=MAX_LENGTH)  # check_bounds cuts it to the model's context length


@dataclass
class TrainingSection:
    epochs: float = 1.0
    max_steps: int = -1               # > 0 overrides epochs
    batch_size: int = 8               # per process: a step sees batch_size x grad_accum x processes
    grad_accum: int = 1
    lr: float = 2e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 0.3        # QLoRA paper
    optim: str = "adamw_torch"        # GPU recipes: paged_adamw_8bit
    gradient_checkpointing: bool = True
    # batch order, as transformers' TrainingArguments.train_sampling_strategy: random | group_by_length
    # (rows of similar length share a batch: less padding when rows are not packed)
    sampling: Literal["random", "group_by_length"] = "random"
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200             # 0: no mid-run checkpoints (a killed run then starts over)
    save_total_limit: int = 2
    progress: bool = True
    # experiment trackers, as transformers' TrainingArguments.report_to: none | tensorboard | trackio |
    # wandb | mlflow | all, or a list of them
    report_to: Union[str, list[str]] = "none"

    def validate(self):
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("training.epochs or training.max_steps must be > 0")
        for name in ("batch_size", "grad_accum", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        at_most(self, "training.", batch_size=MAX_BATCH)  # check_bounds holds a LoRA step to the memory there is
        if self.save_steps < 0:
            raise ValueError(f"training.save_steps must be >= 0 (0: no checkpoints), got {self.save_steps}")
        if self.lr <= 0:
            raise ValueError(f"training.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_total_limit < 2:
            # the newest checkpoint may be the one a crash interrupted: keep one complete one behind it
            raise ValueError(f"training.save_total_limit must be >= 2, got {self.save_total_limit}")
        if isinstance(self.report_to, list) and not self.report_to:
            raise ValueError("training.report_to must not be an empty list (use 'none')")


def refuse_length_grouping(training: TrainingSection, rows: str) -> None:
    """group_by_length reads each row's input_ids; a method whose rows have none (preference pairs are
    tokenized per side) must say so before a model loads, not fail in the Trainer's sampler."""
    if training.sampling == "group_by_length":
        raise ValueError(f"training.sampling: group_by_length needs single-sequence rows, not {rows} (use random)")


def validate_resume(value: str) -> None:
    if not value:
        raise ValueError("resume must be 'auto', 'never' or a checkpoint folder")


def check_bounds(cfg, method: str) -> None:
    """The recipe's sizes within what the model and this machine can take (lightalign.bounds), before
    anything loads (the data included): data.max_length (and the Aligner's max_new_tokens) within the
    model's context length (config.json, else the tokenizer's model_max_length), lora.r within its hidden
    size, a method's own forward batch_size (the inspector's) within MAX_BATCH, and a LoRA/QLoRA step's
    predicted peak memory (adapters.estimate) within the GPU's or the RAM. Every method calls this through
    training.runs.prepare_run; one line naming the field (UserError, exit 2)."""
    from lightalign import bounds

    model = cfg.model.name_or_path
    config = bounds.model_config(model)
    # a seq2seq Aligner's data.max_length spans encoder and decoder; T5's n_positions is no hard limit
    context = None if (config or {}).get("is_encoder_decoder") else bounds.model_context(model, config)
    bounds.check_length(cfg.data.max_length, "data.max_length", context, model)
    bounds.check_length(getattr(cfg, "max_new_tokens", None), "max_new_tokens", context, model)
    batch = getattr(cfg, "batch_size", None)  # the inspector's forward passes outside training
    if isinstance(batch, int) and batch > MAX_BATCH:
        raise UserError(f"batch_size={batch} is more than {MAX_BATCH:,} rows per forward pass")
    lora = getattr(cfg, "lora", None)
    # the inspector trains LoRA in mode lora only; init_from takes r from the adapter it continues
    uses_lora = lora is not None and lora.enabled and getattr(cfg, "mode", "lora") == "lora"
    if uses_lora and not lora.init_from:
        bounds.check_rank(lora.r, "lora.r", config, model)
    if config is None or method not in ("sft", "dpo", "orpo", "aligner") or not uses_lora:
        return  # the estimator models LoRA/QLoRA on a decoder only
    import os

    import torch

    from lightalign.adapters import estimate
    from lightalign.training import distributed

    try:
        arch = estimate.arch_from_config(config)
    except UserError:  # not a Llama-style decoder (a seq2seq Aligner): no estimate to bound by
        return
    gpu = torch.cuda.is_available()
    setup = estimate.setup_from_recipe(
        cfg, method, "cuda" if gpu else "cpu", gpus=distributed.world_size() if gpu else 1,
        fsdp=os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"),
        cpu_offload=os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() in ("1", "true"))
    peak = estimate.estimate(arch, setup)["peak_bytes"] * estimate.FRAGMENTATION
    t = cfg.training
    bounds.check_memory(peak, f"training.batch_size={t.batch_size} x data.max_length={cfg.data.max_length}, "
                        f"lora.r={lora.r}", "lower training.batch_size (raise training.grad_accum to keep the "
                        "step's size), data.max_length or lora.r")
