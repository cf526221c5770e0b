"""Load the frozen base (4-bit NF4 + double quant, or 16-bit), its tokenizer, and LoRA configs.

Safe by default: safetensors only (pickled .bin weights run code on load) and no remote code,
unless the recipe opts in. Compute dtype follows the device: bf16 on GPUs that support it, fp32
otherwise (fp16 overflows in QLoRA training, so it is never picked automatically).
"""

from __future__ import annotations

import json
from pathlib import Path

from lightalign.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Tokens that real checkpoints reserve for padding, tried before adding a new one.
PAD_CANDIDATES = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<|fim_pad|>", "<unk>")


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


def check_model_source(name_or_path: str, trust_remote_code: bool = False, allow_pickle: bool = False,
                       what: str = "model.name_or_path") -> None:
    """Refuse, before loading, a local model with only pickled weights or with custom code.

    Hub ids are checked by transformers itself (use_safetensors / trust_remote_code are passed on).
    """
    path = Path(name_or_path)
    if not path.exists():
        if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
            raise UserError(f"{what}: {name_or_path}: folder not found")
        return  # a hub id
    if not path.is_dir():
        raise UserError(f"{what}: {name_or_path}: expected a model folder (config.json + weights)")
    files = [p.name for p in path.iterdir()]
    if not any(f.endswith(".safetensors") for f in files):
        pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickled and not allow_pickle:
            raise UserError(f"{what}: {name_or_path} has only pickle weights ({pickled[0]}), which can run code "
                            "when loaded; convert them to safetensors or set model.allow_pickle=true")
        if not pickled:
            raise UserError(f"{what}: {name_or_path}: no *.safetensors weights found")
    cfg = path / "config.json"
    if cfg.exists() and not trust_remote_code:
        auto_map = json.loads(cfg.read_text(encoding="utf-8")).get("auto_map")
        if auto_map:
            raise UserError(f"{what}: {name_or_path} needs custom code ({next(iter(auto_map.values()))}); "
                            "read it, then set model.trust_remote_code=true to run it")


def check_adapter_dir(path: str | Path, allow_pickle: bool = False) -> Path:
    path = Path(path)
    if not (path / "adapter_config.json").exists():
        raise UserError(f"{path}: not an adapter folder (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").exists() and not allow_pickle:
        raise UserError(f"{path}: no adapter_model.safetensors (pickled adapters are refused)")
    return path


def quantization_config(quantization: str, double_quant: bool = True, dtype=None):
    """NF4 with double quant (QLoRA): ~4.13 bits per weight of every nn.Linear except lm_head."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=dtype if dtype is not None else compute_dtype())


def ensure_pad_token(tokenizer, model=None):
    """Pad must differ from EOS, or masking pads also masks every EOS and the model never learns to stop."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer
    vocab = tokenizer.get_vocab()
    for cand in PAD_CANDIDATES:
        if cand in vocab and vocab[cand] != tokenizer.eos_token_id:
            tokenizer.pad_token = cand
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            # the pad row is never attended to nor learned (labels -100), so no training is needed for it
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as e:
        raise UserError(f"model.name_or_path: cannot load a tokenizer from {name_or_path}: {e}") from None
    if not tok.chat_template:
        raise UserError(f"{name_or_path}: the tokenizer has no chat template; use an instruct/chat checkpoint "
                        "or one whose tokenizer_config.json carries chat_template")
    tok.padding_side = "right"  # training; generation switches to left padding itself
    return ensure_pad_token(tok)


def load_base(model_cfg, training: bool = True, gradient_checkpointing: bool = False):
    """Load the base for QLoRA (every base weight frozen) or for inference (`training=False`)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_source(model_cfg.name_or_path, model_cfg.trust_remote_code, model_cfg.allow_pickle)
    dtype = compute_dtype(model_cfg.compute_dtype)
    if model_cfg.quantization != "none" and not _bnb_available():
        raise UserError("model.quantization=nf4 needs bitsandbytes (pip install 'lightalign[train]'), "
                        "or set model.quantization=none")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_cfg.name_or_path, revision=model_cfg.revision, dtype=dtype,
            quantization_config=quantization_config(model_cfg.quantization, model_cfg.double_quant, dtype),
            device_map={"": 0} if torch.cuda.is_available() else {"": "cpu"},
            trust_remote_code=model_cfg.trust_remote_code, use_safetensors=not model_cfg.allow_pickle,
            attn_implementation=model_cfg.attn_implementation,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"model.name_or_path: cannot load {model_cfg.name_or_path}: {e}") from None
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


def lora_config(lora_cfg):
    from peft import LoraConfig

    return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=lora_cfg.target_modules, use_dora=lora_cfg.use_dora,
                      use_rslora=lora_cfg.use_rslora, bias="none", task_type="CAUSAL_LM")


def load_with_adapter(model_cfg, adapter_dir: str | Path, trainable: bool = False):
    """Base (4-bit unless the recipe says otherwise) + a saved adapter, e.g. for evaluation."""
    from peft import PeftModel

    adapter_dir = check_adapter_dir(adapter_dir, model_cfg.allow_pickle)
    base = load_base(model_cfg, training=trainable)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
    return model if trainable else model.eval()


def adapter_base_name(adapter_dir: str | Path) -> str | None:
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.exists():
        return None
    return json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")


def cast_trainable(model, dtype) -> None:
    """TRL stores QLoRA adapter weights in bf16 (the paper's GPU recipe); on CPU compute is fp32, and
    bf16 adapters there are both slower and lossier, so put trainable weights back in `dtype`."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def restore_from_ref(model) -> None:
    """After `cast_trainable`, give the trained adapter the exact (un-rounded) values of the frozen
    "ref" copy TRL made of it, so DPO from an SFT adapter starts exactly at its reference."""
    if "ref" not in getattr(model, "peft_config", {}):
        return
    for name, param in model.named_parameters():
        if ".default." in name:
            ref = model.get_parameter(name.replace(".default.", ".ref."))
            param.data = ref.data.detach().clone().to(param.dtype)


def unfreeze_for_full_finetune(cfg, model) -> None:
    """`lora.enabled: false`: train every weight of a 16/32-bit base (the baseline adapters are compared to)."""
    if cfg.model.quantization != "none":
        raise UserError("lora.enabled=false (full fine-tune) needs model.quantization=none: "
                        "4-bit weights cannot be trained")
    if cfg.lora.init_from:
        raise UserError("lora.init_from is for adapters; to continue a full fine-tune, set model.name_or_path to it")
    for p in model.parameters():
        p.requires_grad_(True)
