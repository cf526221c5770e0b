"""AppConfig defaults, YAML loading and the `lightalign app` command's checks (no model loads)."""

from pathlib import Path

import pytest

from lightalign.app.cli import resolve_config
from lightalign.app.config import DEFAULT_CONFIG, AppConfig
from lightalign.cli import build_parser, main
from lightalign.config import load_config
from lightalign.errors import UserError


def parse(*argv):
    return build_parser().parse_args(["app", *argv])


def test_defaults_serve_nothing_but_localhost():
    cfg = AppConfig()
    assert cfg.host == "127.0.0.1"
    assert (cfg.base_path, cfg.adapter_path, cfg.aligner_path, cfg.examples_path, cfg.judge) == (None,) * 5
    cfg = AppConfig(base="/m/base", adapter="none", aligner="/models/al")
    assert cfg.adapter_path is None and cfg.aligner_path == Path("/models/al") and cfg.base_path == Path("/m/base")
    assert AppConfig(adapter="Off").adapter_path is None


def test_yaml_loads_and_names_bad_keys(tmp_path):
    good = tmp_path / "app.yaml"
    good.write_text("base: /models/base\nquantization: none\nmax_prompt_chars: 300\nport: 8000\n"
                    "examples: prompts.jsonl\njudge: pkg.mod:make\njudge_options: {world: w.json, strict: true}\n")
    cfg = load_config(AppConfig, good)
    assert (cfg.base_path, cfg.quantization, cfg.max_prompt_chars, cfg.port) == (Path("/models/base"), "none", 300, 8000)
    assert (cfg.examples_path, cfg.judge, cfg.judge_options) == (Path("prompts.jsonl"), "pkg.mod:make",
                                                                  {"world": "w.json", "strict": True})
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_promt_chars: 10\n")
    with pytest.raises(UserError, match=r"bad.yaml.*max_promt_chars.*did you mean 'max_prompt_chars'"):
        load_config(AppConfig, bad)
    bad.write_text("concurrency_limit: 0\n")
    with pytest.raises(UserError, match="concurrency_limit"):
        load_config(AppConfig, bad)
    bad.write_text("base: /m\njudge: pkg.mod:make\n")
    with pytest.raises(UserError, match=r"bad.yaml: field 'judge' needs 'examples'"):
        load_config(AppConfig, bad)
    bad.write_text("judge_options: [1, 2]\n")
    with pytest.raises(UserError, match=r"judge_options.*mapping"):
        load_config(AppConfig, bad)


def test_no_config_and_no_base_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/minilab/app.yaml here
    assert main(["app"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "run `lightalign lab`" in err and DEFAULT_CONFIG in err and "--base" in err and "--config" in err


def test_the_default_config_file_is_used_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    default = tmp_path / DEFAULT_CONFIG
    default.parent.mkdir(parents=True)
    default.write_text(f"base: {tmp_path / 'base'}\nadapter: /a/dpo\nport: 8123\n")
    cfg, path = resolve_config(parse())
    assert path == DEFAULT_CONFIG and (cfg.base_path, cfg.adapter_path, cfg.port) == (tmp_path / "base", Path("/a/dpo"), 8123)
    cfg, path = resolve_config(parse("--adapter", "none"))  # flags still apply on top of it
    assert path == DEFAULT_CONFIG and cfg.adapter_path is None
    other = tmp_path / "other"
    other.mkdir()
    cfg, path = resolve_config(parse("--base", str(other)))  # --base alone: the default file is not read
    assert path is None and cfg.base_path == other and cfg.adapter_path is None and cfg.port == 7860


def test_cli_flags_override_the_yaml(tmp_path):
    (tmp_path / "b").mkdir()
    yaml_file = tmp_path / "app.yaml"
    yaml_file.write_text(f"base: {tmp_path / 'b'}\nport: 8000\nmax_queue: 3\n")
    cfg, _ = resolve_config(parse("--config", str(yaml_file), "--port", "9000", "--adapter", "none",
                                  "concurrency_limit=2"))
    assert (cfg.port, cfg.max_queue, cfg.concurrency_limit, cfg.adapter_path) == (9000, 3, 2, None)
    with pytest.raises(UserError, match="port"):
        resolve_config(parse("--base", str(tmp_path / "b"), "--port", "70000"))


def test_missing_base_and_removed_lab_key_are_one_line_errors(tmp_path, capsys):
    yaml_file = tmp_path / "app.yaml"
    yaml_file.write_text("adapter: /a\n")
    with pytest.raises(UserError, match=r"app.yaml: no base model: set `base` in it, or give --base"):
        resolve_config(parse("--config", str(yaml_file)))
    with pytest.raises(UserError, match=r"base model .*nowhere: no such folder"):
        resolve_config(parse("--base", str(tmp_path / "nowhere")))
    yaml_file.write_text("lab: runs/minilab\n")
    assert main(["app", "--config", str(yaml_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key 'lab' was removed" in err and "app.yaml" in err


def test_deprecated_lab_flag_reads_the_folder_app_yaml(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "app.yaml").write_text(f"base: {tmp_path / 'base'}\naligner: none\n")
    cfg, path = resolve_config(parse("--lab", str(tmp_path)))
    assert path == str(tmp_path / "app.yaml") and cfg.base_path == tmp_path / "base" and cfg.aligner_path is None
    assert "--lab is deprecated" in capsys.readouterr().err
    assert main(["app", "--lab", str(tmp_path / "nolab")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "deprecated" in err[0] and "nolab" in err[-1] and "app.yaml" in err[-1] and len(err) == 2


def test_a_bad_judge_or_examples_file_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import lightalign.app.models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(lightalign.app.models, "Models", no_load)
    (tmp_path / "base").mkdir()
    examples = tmp_path / "ex.jsonl"
    examples.write_text('{"prompt": "hi"}\n{"kind": "x"}\n')
    base = ["app", "--base", str(tmp_path / "base")]
    assert main(base + [f"examples={examples}"]) == 2
    assert f"{examples}:2: missing field 'prompt'" in capsys.readouterr().err
    examples.write_text('{"prompt": "hi"}\n')
    assert main(base + [f"examples={examples}", "judge=lightalign.nope:make"]) == 2
    assert "judge: cannot import 'lightalign.nope'" in capsys.readouterr().err
    assert main(base + [f"examples={examples}", "judge=lightalign.lab.judges:eval_judge",
                        "judge_options={colour: red}"]) == 2
    assert "does not accept options ['colour']" in capsys.readouterr().err
