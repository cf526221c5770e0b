"""Merge an adapter into its base and save a plain safetensors model.

The adapter was trained against the *dequantized NF4* weights, not the original 16-bit ones, so
merging into the original would shift every output a little, and merging into the 4-bit layers
re-quantizes the sum (lossy). We load the base as it was trained (4-bit), dequantize it
(transformers' `dequantize()`), merge with PEFT's `merge_and_unload`, and save in bf16 (GPU) or
fp32 (CPU): the merged model then reproduces the unmerged 4-bit + adapter model.
The output folder is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lightalign import loading
from lightalign.config import from_dict
from lightalign.errors import UserError
from lightalign.io import make_dir, read_json_object
from lightalign.training.sections import ModelSection

MERGE_INFO = "merge_info.json"


def trained_model_section(adapter_dir: Path, base: str | None = None, **overrides):
    """The ModelSection the adapter was trained with (from run_config.json if present)."""
    fields = {}
    run_cfg = adapter_dir / "run_config.json"
    if run_cfg.exists():
        fields = read_json_object(run_cfg, "run config").get("model") or {}
        if not isinstance(fields, dict):
            raise UserError(f"{run_cfg}: 'model' must be a mapping, got {type(fields).__name__}")
    name = base or fields.get("name_or_path") or loading.adapter_base_name(adapter_dir)
    if not name:
        raise UserError(f"{adapter_dir}: the adapter does not name its base; pass --base")
    fields["name_or_path"] = name
    fields.update({k: v for k, v in overrides.items() if v is not None})
    known = ModelSection.__dataclass_fields__
    return from_dict(ModelSection, {k: v for k, v in fields.items() if k in known}, source=str(run_cfg))


def check_out_dir(out_dir: Path, adapter_dir: Path) -> None:
    """The output folder is replaced when the merge completes: refuse any folder that is not an
    earlier merge output (the adapter itself, `.`, a folder of other files) and a file in the way."""
    if not str(out_dir).strip():
        raise UserError("the output folder is empty: name a folder to write the merged model to")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: is a file, expected a folder for the merged model")
    out, adapter = out_dir.resolve(), adapter_dir.resolve()
    if out == adapter or out in adapter.parents:
        raise UserError(f"{out_dir}: would replace the adapter {adapter_dir}; pick a new folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MERGE_INFO).exists():
        raise UserError(f"{out_dir}: exists and is not a merged model (no {MERGE_INFO}); pick a new folder")
    make_dir(out_dir.parent, "its folder")


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, dtype: str = "auto",
                  allow_pickle: bool | None = None, trust_remote_code: bool | None = None) -> Path:
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    loading.check_adapter_dir(adapter_dir, bool(allow_pickle))
    check_out_dir(out_dir, adapter_dir)
    model_cfg = trained_model_section(adapter_dir, base, allow_pickle=allow_pickle,
                                      trust_remote_code=trust_remote_code)
    out_dtype = loading.compute_dtype(dtype)
    model = loading.load_base(model_cfg, training=False)
    if model_cfg.quantization != "none":
        model = model.dequantize(dtype=out_dtype)
    else:
        model = model.to(out_dtype)
    merged = loading.load_peft(model, adapter_dir, model_cfg.allow_pickle).merge_and_unload()
    merged = merged.to(out_dtype)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else model_cfg.name_or_path
    loading.load_tokenizer(str(tokenizer_src), model_cfg.trust_remote_code).save_pretrained(str(tmp))
    (tmp / MERGE_INFO).write_text(json.dumps({
        "adapter": str(adapter_dir), "base": model_cfg.name_or_path, "base_quantization": model_cfg.quantization,
        "dtype": str(out_dtype).replace("torch.", ""), "merged_into": "dequantized base" if
        model_cfg.quantization != "none" else "base"}, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
