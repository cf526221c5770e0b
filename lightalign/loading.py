"""The one safe model loader: frozen base (4-bit NF4 + double quant, or 16/32-bit), tokenizer, adapters.

Every command loads weights through here (training, merge, eval, app, serve, the Aligner), so the
safety rules live in one place: safetensors only (pickled .bin weights run code on load) and no
remote code, unless the caller opts in; a pickle that torch's `weights_only` loader rejects stays
refused even then. A source may also be a GGUF file (or a folder + `gguf_file`) or `pkg:<package>/<path>`:
`resolve_model` (lightalign.model_sources) turns it into a cached safetensors folder first, inside
`check_model_source` and `load_tokenizer`, so every caller gets it. The one `BitsAndBytesConfig` builder
is `quantization_config`. Compute dtype follows the device: bf16 on GPUs that support it, fp32 otherwise
(fp16 overflows in QLoRA training, so it is never picked automatically).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

from lightalign.errors import UserError
from lightalign.io import read_json_object
from lightalign.model_sources import recorded_base
from lightalign.model_sources import resolve as resolve_model

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Tokens that real checkpoints reserve for padding, tried before adding a new one.
PAD_CANDIDATES = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<|fim_pad|>", "<unk>")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class _NoHubKernelNotice(logging.Filter):
    """bitsandbytes warns on every 4-bit load on an AVX512-BF16 CPU that it could not fetch an optional
    kernel (`kernels` downloads it from the model hub). Nothing a user can act on offline, and the
    built-in CPU path it falls back to is the one every result here was measured with: keep it quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoHubKernelNotice())


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def compute_dtype(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.fullmatch(name)) and not name.startswith((".", "~"))


def check_exists(name_or_path: str, what: str = "model.name_or_path") -> None:
    """A local path that does not exist is named as such (not as a malformed hub id)."""
    if not Path(name_or_path).expanduser().exists() and not looks_like_hub_id(name_or_path):
        raise UserError(f"{what}: {name_or_path}: path does not exist (folder not found)")


def check_model_source(name_or_path: str, trust_remote_code: bool = False, allow_pickle: bool = False,
                       what: str = "model.name_or_path", gguf_file: str | None = None) -> str:
    """The folder (or hub id) to load `name_or_path` from (`resolve_model`), after refusing a missing
    local path, a local model with only pickled weights, or one with custom code. Hub ids are checked
    by transformers itself (use_safetensors / trust_remote_code)."""
    name_or_path = resolve_model(name_or_path, gguf_file, what)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        check_exists(name_or_path, what)
        return name_or_path  # a hub id, or a missing relative folder: `load_error` names both
    if not path.is_dir():
        raise UserError(f"{what}: {name_or_path}: expected a model folder (config.json + weights)")
    files = [p.name for p in path.iterdir()]
    if not any(f.endswith(".safetensors") for f in files):
        pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickled and not allow_pickle:
            raise UserError(f"{what}: {name_or_path} has only pickle weights ({pickled[0]}), which can run code "
                            "when loaded; convert them to safetensors or set allow_pickle (--allow-pickle)")
        if not pickled:
            raise UserError(f"{what}: {name_or_path}: no *.safetensors weights found")
    cfg = path / "config.json"
    if cfg.exists():  # read here, so a broken config.json is one line naming it, not a traceback later
        config = read_json_object(cfg, "config.json")
    if cfg.exists() and not trust_remote_code:
        auto_map = config.get("auto_map")
        if auto_map:
            raise UserError(f"{what}: {name_or_path} needs custom code ({next(iter(auto_map.values()))}); "
                            "read it, then set trust_remote_code to run it")
    return name_or_path


def check_adapter_dir(path: str | Path, allow_pickle: bool = False) -> Path:
    """A PEFT adapter folder whose weights are safetensors (a pickle-only one needs `allow_pickle`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: adapter folder does not exist")
    if not (path / "adapter_config.json").exists():
        raise UserError(f"{path}: not an adapter folder (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").exists():
        if not allow_pickle:
            raise UserError(f"{path}: no adapter_model.safetensors; pickled adapters (adapter_model.bin) can run "
                            "code when loaded and are refused unless you set allow_pickle (--allow-pickle)")
        if not (path / "adapter_model.bin").exists():
            raise UserError(f"{path}: no adapter weights (adapter_model.safetensors)")
    return path


def load_error(name_or_path: str, e: BaseException, allow_pickle: bool = False,
               what: str = "model.name_or_path") -> UserError:
    """One line for a failed load: a refused pickle, a missing folder or hub id, or the library's reason."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "weights_only" in str(e) or type(e).__name__ == "UnpicklingError":
        return UserError(f"{what}: {name_or_path}: the pickle weights hold more than tensors (torch's safe "
                         f"weights_only loader refused them: {msg}); convert them to safetensors from a trusted copy")
    if not allow_pickle and ("safetensors" in msg.lower() or ".bin" in msg):
        return UserError(f"{what}: {name_or_path}: no safetensors weights ({msg}); pickle .bin files can run code "
                         "when loaded, so they are refused unless you set allow_pickle (--allow-pickle) for a "
                         "source you trust")
    if not Path(name_or_path).expanduser().exists():
        return UserError(f"{what}: {name_or_path}: no such local path, and not loadable as a hub id ({msg})")
    return UserError(f"{what}: cannot load {name_or_path}: {msg}")


QUANT_STORAGE = ("uint8", "bf16", "fp16", "fp32")


def quantization_config(quantization: str, double_quant: bool = True, dtype=None, quant_storage: str = "uint8"):
    """The one BitsAndBytesConfig: NF4 with double quant (QLoRA), ~4.13 bits per weight of every
    nn.Linear except lm_head; `quantization='none'` returns None (a 16/32-bit model).

    `quant_storage` is the dtype the packed 4-bit weights are stored in (the same bytes either way):
    FSDP shards only floating-point tensors, and only modules whose tensors share one dtype, so
    FSDP + QLoRA stores them in the model's dtype (bf16); uint8 (bitsandbytes' default) otherwise."""
    if quantization == "none":
        return None
    if quantization != "nf4":
        raise UserError(f"model.quantization must be 'nf4' or 'none', got {quantization!r}")
    if not _bnb_available():
        raise UserError("model.quantization=nf4 needs bitsandbytes (pip install 'lightalign[train]'), "
                        "or set model.quantization=none")
    if quant_storage not in QUANT_STORAGE:
        raise UserError(f"model.quant_storage must be one of {', '.join(QUANT_STORAGE)}, got {quant_storage!r}")
    import torch
    from transformers import BitsAndBytesConfig

    dtype = dtype if dtype is not None else compute_dtype()
    storage = torch.uint8 if quant_storage == "uint8" else compute_dtype(quant_storage)
    if storage.is_floating_point and storage != dtype:
        raise UserError(f"model.quant_storage={quant_storage} must match the compute dtype ({dtype}): FSDP wraps "
                        "a layer's 4-bit and other weights together only when they share one dtype")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_quant_storage=storage)


def ensure_pad_token(tokenizer, model=None):
    """Pad must differ from EOS, or masking pads also masks every EOS and the model never learns to stop.
    A token the vocabulary already has (a reserved pad, else the unknown token) is preferred to a new
    one; a new one grows `model`'s embeddings, also when the tokenizer got it before the model loaded."""
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for cand in PAD_CANDIDATES + ((tokenizer.unk_token,) if tokenizer.unk_token else ()):
            if cand in vocab and vocab[cand] != tokenizer.eos_token_id:
                tokenizer.pad_token = cand
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    if model is not None:
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            # the pad row is never attended to nor learned (labels -100), so no training is needed for it
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None,
                   gguf_file: str | None = None):
    """A chat tokenizer, right-padded for training, with a pad token distinct from EOS."""
    from transformers import AutoTokenizer

    name_or_path = resolve_model(name_or_path, gguf_file)
    check_exists(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as e:
        if not Path(name_or_path).expanduser().exists():
            raise load_error(name_or_path, e) from None
        raise UserError(f"model.name_or_path: cannot load a tokenizer from {name_or_path}: {e}") from None
    if not tok.chat_template:
        raise UserError(f"{name_or_path}: the tokenizer has no chat template; use an instruct/chat checkpoint "
                        "or one whose tokenizer_config.json carries chat_template")
    tok.padding_side = "right"  # training; generation switches to left padding itself
    return ensure_pad_token(tok)


def load_base(model_cfg, training: bool = True, gradient_checkpointing: bool = False):
    """Load the base for QLoRA (every base weight frozen) or for inference (`training=False`).

    `model_cfg` is a ModelSection (lightalign.training.sections) or any object with its fields."""
    import torch
    from transformers import AutoModelForCausalLM

    src = check_model_source(model_cfg.name_or_path, model_cfg.trust_remote_code, model_cfg.allow_pickle,
                             gguf_file=getattr(model_cfg, "gguf_file", None))
    dtype = compute_dtype(model_cfg.compute_dtype)
    quant = quantization_config(model_cfg.quantization, model_cfg.double_quant, dtype,
                                getattr(model_cfg, "quant_storage", "uint8"))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, revision=model_cfg.revision, dtype=dtype, quantization_config=quant,
            device_map=load_device_map() if torch.cuda.is_available() else {"": "cpu"},
            trust_remote_code=model_cfg.trust_remote_code, use_safetensors=not model_cfg.allow_pickle,
            attn_implementation=model_cfg.attn_implementation,
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise load_error(src, e, model_cfg.allow_pickle) from None
    except Exception as e:  # a refused pickle surfaces as pickle.UnpicklingError
        if type(e).__name__ == "UnpicklingError":
            raise load_error(src, e, model_cfg.allow_pickle) from None
        raise
    for p in model.parameters():
        p.requires_grad_(False)
    if not training:
        return model.eval()
    keep_4bit_layout_trainable(model)
    if model_cfg.quantization != "none" and model_cfg.upcast_non_quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gradient_checkpointing:
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def load_device_map():
    """Where a GPU process loads the base: its own GPU (LOCAL_RANK under `accelerate launch`/torchrun),
    or nowhere yet under FSDP, which shards the weights itself (accelerate's cpu_ram_efficient_loading)."""
    import os

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def keep_4bit_layout_trainable(model) -> None:
    """bitsandbytes (0.50) repacks 4-bit weights into an AVX512-BF16 inference layout the first time a
    Linear4bit runs in eval mode on CPU, and keeps that layout after `.train()`: later backward passes then
    go through `gemv_4bit`, which has no autograd kernel, and the gradient flowing into earlier layers is
    wrong (torch only warns). Trainers switch to eval mode (DPO's reference precompute, evaluation), so
    for a model that will be trained we turn the repacking off and undo any that already happened."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state)


def _bnb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def load_peft(model, adapter_dir: str | Path, allow_pickle: bool = False, trainable: bool = False):
    """`model` + the checked adapter in `adapter_dir` (PEFT), with a refused pickle as one line."""
    try:
        from peft import PeftModel
    except ImportError:
        raise UserError(f"{adapter_dir} is a LoRA adapter: loading it needs peft (pip install 'lightalign[train]')") \
            from None
    adapter_dir = check_adapter_dir(adapter_dir, allow_pickle)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except Exception as e:
        if "weights_only" in str(e) or type(e).__name__ == "UnpicklingError":
            raise load_error(str(adapter_dir), e, allow_pickle, what="adapter") from None
        raise


def load_with_adapter(model_cfg, adapter_dir: str | Path, trainable: bool = False):
    """Base (4-bit unless the recipe says otherwise) + a saved adapter, e.g. for evaluation."""
    check_adapter_dir(adapter_dir, model_cfg.allow_pickle)
    base = load_base(model_cfg, training=trainable)
    model = load_peft(base, adapter_dir, model_cfg.allow_pickle, trainable=trainable)
    return model if trainable else model.eval()


def adapter_base_name(adapter_dir: str | Path) -> str | None:
    """The base an adapter folder names: its lightalign base record (a GGUF or pkg: base, re-resolved where
    the dequantized folder PEFT is told about does not exist), else adapter_config.json's
    base_model_name_or_path (older folders say pkg:... there: resolve_model still reads that)."""
    recorded = recorded_base(adapter_dir)
    if recorded:
        return recorded
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.exists():
        return None
    value = read_json_object(cfg, "adapter_config.json").get("base_model_name_or_path")
    return value if isinstance(value, str) and value else None


def model_spec(name_or_path: str, quantization: str = "none", compute_dtype: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False, revision: str | None = None,
               attn_implementation: str | None = None, double_quant: bool = True):
    """The fields `load_base` reads, for callers without a recipe (app, serve, eval)."""
    return SimpleNamespace(name_or_path=name_or_path, quantization=quantization, double_quant=double_quant,
                           compute_dtype=compute_dtype, trust_remote_code=trust_remote_code,
                           allow_pickle=allow_pickle, revision=revision, upcast_non_quantized=True,
                           attn_implementation=attn_implementation)


def load_for_inference(name_or_path: str | None, adapter: str | Path | None = None, quantization: str = "none",
                       trust_remote_code: bool = False, allow_pickle: bool = False, device: str | None = None,
                       compute_dtype: str = "auto", revision: str | None = None):
    """(model in eval mode, tokenizer) for generation: a base, or a base + adapter (the base then
    defaults to the one named in the adapter's adapter_config.json). The tokenizer comes from the
    adapter folder when it has one, with a pad token distinct from EOS."""
    if adapter is not None:
        check_adapter_dir(adapter, allow_pickle)
        name_or_path = name_or_path or adapter_base_name(adapter)
        if not name_or_path:
            raise UserError(f"{adapter}: the adapter does not name its base model; pass the base explicitly")
    if not name_or_path:
        raise UserError("load_for_inference: name_or_path (or an adapter naming its base) is required")
    spec = model_spec(str(name_or_path), quantization, compute_dtype, trust_remote_code, allow_pickle, revision)
    tok_src = str(adapter) if adapter is not None and (Path(adapter) / "tokenizer_config.json").exists() \
        else str(name_or_path)
    tokenizer = load_tokenizer(tok_src, trust_remote_code, revision if tok_src == str(name_or_path) else None)
    model = load_base(spec, training=False)
    if adapter is not None:
        model = load_peft(model, adapter, allow_pickle).eval()
    ensure_pad_token(tokenizer, model)
    if device is not None and quantization == "none":
        model = model.to(device)
    return model, tokenizer
