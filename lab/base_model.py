"""Pre-train the mini-lab base model: a real transformers Llama, built from a config, trained from
scratch on the lab corpus with the transformers Trainer. A few minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightalign.io import read_jsonl


@dataclass
class BaseModelConfig:
    vocab_size: int = 2048
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    block_size: int = 128
    epochs: float = 16.0
    batch_size: int = 16
    lr: float = 3e-3
    warmup_ratio: float = 0.05
    seed: int = 0


def render(tokenizer, row: dict) -> list[int]:
    """One pre-training row as token ids: documents get BOS..EOS, dialogues their chat template."""
    if "messages" in row:
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]


def pack(rows_ids: list[list[int]], block: int) -> list[list[int]]:
    """Concatenate and cut into equal blocks: no padding is spent in pre-training."""
    flat = [t for ids in rows_ids for t in ids]
    return [flat[i:i + block] for i in range(0, len(flat) - block + 1, block)]


def build_model(cfg: BaseModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def train_base(cfg: BaseModelConfig, data_dir: Path, out_dir: Path) -> Path:
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    from lightalign.lab.tokenizer import train_tokenizer

    set_seed(cfg.seed)
    rows = read_jsonl(data_dir / "pretrain.jsonl")
    texts = [r["text"] if "text" in r else " ".join(m["content"] for m in r["messages"]) for r in rows]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    blocks = pack([render(tokenizer, r) for r in rows], cfg.block_size)
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]

    model = build_model(cfg, tokenizer)
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"), num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio, weight_decay=0.01, logging_steps=50, save_strategy="no",
        report_to=[], seed=cfg.seed, data_seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator)
    result = trainer.train()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_loss": result.training_loss, "final_loss": losses[-1] if losses else None,
            "blocks": len(blocks), "tokens": len(blocks) * cfg.block_size, "epochs": cfg.epochs,
            "params": sum(p.numel() for p in model.parameters()),
            "seconds": result.metrics.get("train_runtime")}
