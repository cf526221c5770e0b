"""Reward-model judge on a real (tiny) reward model trained here with TRL's RewardTrainer on the
lab's preference pairs: the judge must rank held-out chosen replies above rejected ones."""

from __future__ import annotations

import random

import pytest

from lightalign.errors import UserError
from lightalign.evaluation.judge_reward import RewardJudge


def _tiny_reward_model(lab_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(lab_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                      pad_token_id=lab_tokenizer.pad_token_id, bos_token_id=lab_tokenizer.bos_token_id,
                      eos_token_id=lab_tokenizer.eos_token_id)
    return LlamaForSequenceClassification(cfg)


@pytest.fixture(scope="module")
def pairs(small_splits):
    rows = list(small_splits["preference"])
    random.Random(0).shuffle(rows)
    cut = int(0.8 * len(rows))
    return rows[:cut], rows[cut:][:150]


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, lab_tokenizer, pairs):
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    train, _ = pairs
    conv = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in train]
    out = tmp_path_factory.mktemp("reward_model")
    args = RewardConfig(output_dir=str(out / "trainer"), max_steps=25, per_device_train_batch_size=16,
                        learning_rate=2e-3, logging_steps=10, save_strategy="no", report_to=[], seed=0,
                        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, max_length=128)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threads only add overhead on a shared 2-core machine
    try:
        trainer = RewardTrainer(model=_tiny_reward_model(lab_tokenizer), args=args,
                                train_dataset=Dataset.from_list(conv), processing_class=lab_tokenizer)
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    trainer.model.save_pretrained(out, safe_serialization=True)
    lab_tokenizer.save_pretrained(out)
    return out


def _ranking_accuracy(judge, rows):
    good = judge.rewards([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    bad = judge.rewards([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    return sum(g > b for g, b in zip(good, bad)) / len(rows)


@pytest.mark.slow
def test_trained_reward_model_ranks_heldout_chosen_above_rejected(reward_dir, pairs, lab_tokenizer, tmp_path):
    _, heldout = pairs
    judge = RewardJudge(str(reward_dir), batch_size=32)
    acc = _ranking_accuracy(judge, heldout)
    print(f"held-out ranking accuracy {acc:.3f}")
    assert acc >= 0.75, acc
    # batching and padding must not change a score
    one = judge.rewards([heldout[0]["prompt"]], [heldout[0]["chosen"]])[0]
    many = judge.rewards([r["prompt"] for r in heldout[:9]], [r["chosen"] for r in heldout[:9]])[0]
    assert abs(one - many) < 1e-4
    # the same architecture untrained is no better than chance: the test can fail
    untrained = tmp_path / "untrained"
    _tiny_reward_model(lab_tokenizer).save_pretrained(untrained, safe_serialization=True)
    lab_tokenizer.save_pretrained(untrained)
    assert _ranking_accuracy(RewardJudge(str(untrained)), heldout) < acc - 0.15


def test_reward_judge_refuses_non_reward_models(tmp_path, lab_tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=len(lab_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=3, pad_token_id=0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "clf", safe_serialization=True)
    lab_tokenizer.save_pretrained(tmp_path / "clf")
    with pytest.raises(UserError, match="num_labels=1"):
        RewardJudge(str(tmp_path / "clf"))
    with pytest.raises(UserError, match="not found"):
        RewardJudge(str(tmp_path / "nope"))
