"""The model being trained: base + LoRA config (or a continued adapter, or every weight unfrozen).

Shared by the SFT, DPO and ORPO recipes (`build_policy`) and by the Aligner (`lora_config`).
"""

from __future__ import annotations

from lightalign import loading
from lightalign.errors import UserError


def lora_config(lora_cfg, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=lora_cfg.target_modules, use_dora=lora_cfg.use_dora,
                      use_rslora=lora_cfg.use_rslora, bias="none", task_type=task_type)


def build_policy(cfg, tokenizer):
    """(model, peft_config) for a recipe with model/lora/training sections: the frozen base (4-bit unless
    model.quantization=none), a pad token distinct from EOS, and either a new LoRA config for the trainer
    to apply, the adapter of `lora.init_from` made trainable, or (lora.enabled=false) every weight."""
    model = loading.load_base(cfg.model, training=True, gradient_checkpointing=cfg.training.gradient_checkpointing)
    loading.ensure_pad_token(tokenizer, model)
    if not cfg.lora.enabled:
        unfreeze_for_full_finetune(cfg, model)
        return model, None
    if cfg.lora.init_from:
        return loading.load_peft(model, cfg.lora.init_from, cfg.model.allow_pickle, trainable=True), None
    return model, lora_config(cfg.lora)


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
