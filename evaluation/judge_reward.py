"""Reward-model judge: any AutoModelForSequenceClassification with one output (a Bradley-Terry reward
model, as TRL's RewardTrainer trains) scores each (prompt, reply); the report shows mean reward per system.
"""

from __future__ import annotations

from pathlib import Path

from lightalign.errors import UserError


def reward_text(tokenizer, prompt: str, reply: str) -> tuple[str, bool]:
    """(text, already_has_special_tokens): the chat template when the tokenizer has one, as in training."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        return tokenizer.apply_chat_template(msgs, tokenize=False), True
    return f"{prompt}\n\n{reply}", False


class RewardJudge:
    name = "reward"

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = Path(path)
        if not p.exists() and (str(path).startswith((".", "/", "~")) or str(path).count("/") != 1):
            raise UserError(f"{path}: reward model folder not found")  # (owner/name is tried as a hub id)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, use_safetensors=True, trust_remote_code=trust_remote_code)
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise UserError(f"{path}: cannot load a sequence-classification reward model: {e}") from None
        if self.model.config.num_labels != 1:
            raise UserError(f"{path}: a reward model has one output (num_labels=1), this one has "
                            f"{self.model.config.num_labels}")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # needed to find each row's last real token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.identity = {"path": str(path)}

    def rewards(self, prompts: list[str], replies: list[str]) -> list[float]:
        import torch

        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                end = start + self.batch_size
                pairs = [reward_text(self.tokenizer, p, r) for p, r in zip(prompts[start:end], replies[start:end])]
                texts = [t for t, _ in pairs]
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=not pairs[0][1]).to(self.device)
                logits = self.model(**enc).logits[:, 0]
                out.extend(float(x) for x in logits.float().cpu())
        return out

    def score(self, records: list[dict], replies: list[str]) -> list[float]:
        return self.rewards([r["prompt"] for r in records], replies)
