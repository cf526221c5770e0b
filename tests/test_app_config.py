"""AppConfig defaults, YAML loading and the `lightalign app` command's checks (no model loads)."""

from pathlib import Path

import pytest

from lightalign.app.config import AppConfig
from lightalign.cli import main
from lightalign.config import load_config
from lightalign.errors import UserError


def test_defaults_serve_the_lab_on_localhost():
    cfg = AppConfig()
    assert cfg.host == "127.0.0.1"
    assert cfg.base_path == Path("runs/minilab/base")
    assert cfg.adapter_path == Path("runs/minilab/adapters/dpo")
    assert cfg.aligner_path == Path("runs/minilab/aligner")
    cfg = AppConfig(lab="/x", adapter="none", aligner="/models/al")
    assert cfg.adapter_path is None and cfg.aligner_path == Path("/models/al") and cfg.base_path == Path("/x/base")


def test_yaml_loads_and_names_bad_keys(tmp_path):
    good = tmp_path / "app.yaml"
    good.write_text("base: /models/base\nquantization: none\nmax_prompt_chars: 300\nport: 8000\n")
    cfg = load_config(AppConfig, good)
    assert (cfg.base_path, cfg.quantization, cfg.max_prompt_chars, cfg.port) == (Path("/models/base"), "none", 300, 8000)
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_promt_chars: 10\n")
    with pytest.raises(UserError, match=r"bad.yaml.*max_promt_chars.*did you mean 'max_prompt_chars'"):
        load_config(AppConfig, bad)
    bad.write_text("concurrency_limit: 0\n")
    with pytest.raises(UserError, match="concurrency_limit"):
        load_config(AppConfig, bad)


def test_cli_without_a_lab_says_to_build_it(tmp_path, capsys):
    code = main(["app", "--lab", str(tmp_path / "nolab")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "run `lightalign lab` first" in err and str(tmp_path / "nolab") in err


def test_cli_flags_override_the_yaml(tmp_path):
    from lightalign.app.cli import resolve_config
    from lightalign.cli import build_parser

    yaml_file = tmp_path / "app.yaml"
    yaml_file.write_text("lab: /labs/a\nport: 8000\nmax_queue: 3\n")
    args = build_parser().parse_args(["app", "--config", str(yaml_file), "--port", "9000", "--adapter", "none",
                                      "concurrency_limit=2"])
    cfg = resolve_config(args)
    assert (cfg.lab, cfg.port, cfg.max_queue, cfg.concurrency_limit, cfg.adapter_path) == ("/labs/a", 9000, 3, 2, None)
    args = build_parser().parse_args(["app", "--port", "70000"])
    with pytest.raises(UserError, match="port"):
        resolve_config(args)
