"""Merging: dequantize the 4-bit base, fold the adapter in, save safetensors; the merged model
answers like the unmerged 4-bit base + adapter."""

from __future__ import annotations

import pytest
from helpers.adapters import tiny_config, write_lab_data


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir, small_splits):
    from lightalign.adapters import sft

    tmp = tmp_path_factory.mktemp("merge")
    paths = write_lab_data(tmp, small_splits, n=24)
    _, cfg = tiny_config("sft", tiny_model_dir, paths["sft"], tmp / "adapter", training={"lr": 5e-2})
    return tmp, cfg, sft.train(cfg)


def test_merged_model_matches_unmerged_4bit_plus_adapter(adapter):
    import torch
    from transformers import AutoModelForCausalLM

    from lightalign import loading
    from lightalign.cli import main

    tmp, cfg, adapter_dir = adapter
    out = tmp / "merged"
    assert main(["merge", str(adapter_dir), str(out)]) == 0
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not (out.with_name("merged.tmp")).exists()
    merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    assert getattr(merged.config, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 for p in merged.parameters())  # CPU: fp32

    unmerged = loading.load_with_adapter(cfg.model, adapter_dir)
    # compare against bitsandbytes' exact dequantize+matmul path, not its AVX512-BF16 inference kernel
    # (whose bf16 rounding alone moves logits by ~1e-3)
    loading.keep_4bit_layout_trainable(unmerged)
    ids = torch.tensor([[1, 5, 9, 14, 33, 2, 40, 41, 42]])
    with torch.no_grad():
        want = unmerged(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with unmerged.disable_adapter():
            base = unmerged(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (want - base).abs().max() > 1e-2  # the adapter matters, so the match is not trivial
    original = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path).eval()
    with torch.no_grad():  # merging into the original (not dequantized) weights would be off by the NF4 error
        assert (original(input_ids=ids).logits - base).abs().max() > 1e-4


def test_merge_refuses_a_folder_without_adapter(tmp_path):
    from lightalign.cli import main

    assert main(["merge", str(tmp_path), str(tmp_path / "out")]) == 2


def test_merge_never_replaces_a_folder_that_is_not_a_merge_output(adapter, capsys):
    from lightalign.cli import main

    tmp, _, adapter_dir = adapter
    keep = tmp / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    (tmp / "afile").write_text("x")
    for out, needle in ((keep, "exists and is not a merged model"), (adapter_dir, "would replace the adapter"),
                        (adapter_dir.parent, "would replace the adapter"), (tmp / "afile", "is a file"),
                        (tmp / "afile" / "m", "a file is in the way")):
        assert main(["merge", str(adapter_dir), str(out)]) == 2
        assert needle in capsys.readouterr().err
    assert (keep / "notes.txt").read_text() == "precious" and (adapter_dir / "adapter_config.json").exists()


def test_a_broken_run_config_is_named(tmp_path):
    from lightalign.adapters.merge import trained_model_section
    from lightalign.errors import UserError

    for text, needle in (("{", r"run_config.json:1: invalid JSON"), ('{"model": [1]}', "'model' must be a mapping"),
                         ('{"model": {"name_or_path": ["x"]}}', "field 'name_or_path' expects a string")):
        (tmp_path / "run_config.json").write_text(text)
        with pytest.raises(UserError, match=needle):
            trained_model_section(tmp_path)
