"""DPO's reference pass is the base with the adapter disabled, or the SFT adapter DPO continues from,
checked against models loaded independently (never a second 4-bit copy inside the trainer)."""

from __future__ import annotations

import pytest
from helpers.adapters import tiny_config, write_lab_data


def completion_logps(model, batch):
    """Sum of log p(completion tokens | prefix), computed by hand from plain logits."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (token_logp * batch["completion_mask"][:, 1:]).sum(-1)


def independent_base(cfg):
    """A separately loaded 4-bit base, on bitsandbytes' exact dequantize+matmul path (its CPU inference
    kernel rounds through bf16, ~1e-4 relative, which would blur the comparison)."""
    from lightalign import loading

    base = loading.load_base(cfg.model, training=False)
    loading.keep_4bit_layout_trainable(base)
    return base


def _train_a_little(trainer, steps=2):
    trainer.args.max_steps = steps
    trainer.train()


@pytest.fixture(scope="module")
def data(tmp_path_factory, small_splits):
    tmp = tmp_path_factory.mktemp("dpo")
    return tmp, write_lab_data(tmp, small_splits, n=24)


def test_reference_is_base_with_adapter_disabled(data, tiny_model_dir):
    import torch

    from lightalign.adapters import dpo

    tmp, paths = data
    _, cfg = tiny_config("dpo", tiny_model_dir, paths["preference"], tmp / "fresh", training={"lr": 5e-2})
    trainer, _, _ = dpo.build_trainer(cfg)
    assert trainer.ref_model is None  # no second copy of the base
    _train_a_little(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    trl_ref = torch.cat([ref_chosen, ref_rejected])

    base = independent_base(cfg)  # no adapter at all
    expected = completion_logps(base, batch)
    torch.testing.assert_close(trl_ref, expected, atol=1e-4, rtol=1e-5)
    trainer.model.eval()
    policy = completion_logps(trainer.model, batch)
    assert (policy - expected).abs().max() > 1e-2  # the adapter moved: the check can fail


def test_reference_is_the_sft_adapter_when_continuing(data, tiny_model_dir):
    import torch
    from peft import PeftModel

    from lightalign.adapters import dpo, sft

    tmp, paths = data
    _, sft_cfg = tiny_config("sft", tiny_model_dir, paths["sft"], tmp / "sft", training={"lr": 5e-2})
    sft_dir = sft.train(sft_cfg)
    _, cfg = tiny_config("dpo", tiny_model_dir, paths["preference"], tmp / "dpo", training={"lr": 5e-2},
                         lora={"init_from": str(sft_dir)})
    trainer, _, _ = dpo.build_trainer(cfg)
    assert trainer.ref_model is None and set(trainer.model.peft_config) == {"default", "ref"}
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    start = completion_logps(trainer.model, batch)
    _train_a_little(trainer)
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    trl_ref = torch.cat([ref_chosen, ref_rejected])

    sft_model = PeftModel.from_pretrained(independent_base(cfg), str(sft_dir)).eval()
    expected = completion_logps(sft_model, batch)
    torch.testing.assert_close(trl_ref, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(start, expected, atol=1e-4, rtol=1e-5)  # the policy starts at its reference
    base_only = completion_logps(independent_base(cfg), batch)
    assert (expected - base_only).abs().max() > 1e-2  # the SFT adapter is not the bare base
    trainer.model.eval()
    assert (completion_logps(trainer.model, batch) - expected).abs().max() > 1e-2


def test_rpo_alpha_adds_the_chosen_replys_token_nll_to_the_loss(data, tiny_model_dir):
    """dpo.rpo_alpha: DPO loss + alpha x mean NLL of the chosen replies' tokens (checked by hand)."""
    import torch

    from lightalign.adapters import dpo

    tmp, paths = data
    losses = {}
    for alpha in (0.0, 2.0):
        _, cfg = tiny_config("dpo", tiny_model_dir, paths["preference"], tmp / f"rpo{alpha}", dpo={"rpo_alpha": alpha})
        trainer, _, _ = dpo.build_trainer(cfg)
        trainer.model.eval()
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            losses[alpha] = trainer.compute_loss(trainer.model, batch).item()
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    chosen = slice(0, len(logp) // 2)  # TRL stacks chosen rows, then rejected ones
    mask = batch["completion_mask"][chosen, 1:].bool()
    nll = -logp[chosen][mask].mean().item()
    assert nll > 0.5  # the term is not negligible, so a missing one would show
    assert losses[2.0] - losses[0.0] == pytest.approx(2.0 * nll, rel=1e-3)


def test_rpo_alpha_out_of_range_is_refused_naming_the_field(tmp_path):
    from lightalign.adapters import dpo
    from lightalign.config import load_config
    from lightalign.errors import UserError

    recipe = tmp_path / "dpo.yaml"
    recipe.write_text("method: dpo\nmodel: {name_or_path: m}\ndata: {path: p.jsonl}\noutput_dir: out\n")
    with pytest.raises(UserError, match="rpo_alpha"):
        load_config(dpo.Config, recipe, ["dpo.rpo_alpha=-1"])
