"""The `lightalign` command: fast help, and one clear line with exit code 2 on bad input."""

import subprocess
import sys

import pytest

from lightalign.cli import main


def run_cli(*args):
    p = subprocess.run([sys.executable, "-m", "lightalign", *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_help_does_not_import_torch():
    code = ("import sys; from lightalign.cli import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'gradio', 'peft') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


COMMANDS = ["lab", "train", "estimate", "merge", "correct", "eval", "elasticity", "app", "serve"]


def test_every_command_is_registered():
    from lightalign.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    code, out, err = run_cli(command, "--help")
    assert code == 0, err
    assert out.startswith(f"usage: lightalign {command}")


def test_a_missing_lightalign_module_is_loud(monkeypatch):
    from lightalign import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", "lightalign.no_such_module")
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_a_missing_third_party_extra_is_one_line(monkeypatch, capsys):
    from lightalign.training import cli as train_cli

    def needs_peft(args):
        raise ModuleNotFoundError("No module named 'peft'", name="peft")

    monkeypatch.setattr(train_cli, "run", needs_peft)
    assert main(["train", "anything.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lightalign train: error: needs the optional package 'peft' (pip install 'lightalign[train]')"


@pytest.mark.parametrize("args,needle", [
    (["frobnicate"], "invalid choice"),
    (["lab", "--until", "nowhere"], "invalid choice"),
    (["lab", "--real", "--until", "world"], "the real track's stages are model, data"),  # a mini-lab stage
    (["lab", "--until", "answers"], "the mini-lab's stages are world"),                 # a real-track stage
    (["lab", "--judge-url", "http://127.0.0.1:9"], "use it with --real"),
    (["lab", "--dir", "/nonexistent/x", "eval_sample=10"], "unknown key 'eval_sample'"),  # a real-track key
    (["lab", "--dir", "/nonexistent/x", "base.epoch=8"], "did you mean 'base.epochs'"),
    (["lab", "--dir", "/nonexistent/x", "base.epochs=many"], "'base.epochs' expects a number"),
    (["lab", "--real", "--dir", "/nonexistent/x", "nope=1"], "unknown key 'nope'"),
    (["lab", "--real", "--dir", "/nonexistent/x", "safety_share=1.5"], "safety_share must be in [0, 1)"),
    (["train", "no/such/recipe.yaml"], "no/such/recipe.yaml"),
])
def test_bad_input_gives_one_line_and_exit_2(args, needle):
    code, out, err = run_cli(*args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_recipe_key_names_the_file_and_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: sft\nmodle: {}\n")
    code = main(["train", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2 and str(recipe) in err and "modle" in err


def test_unknown_method_is_named(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: telepathy\n")
    assert main(["train", str(recipe)]) == 2
    assert "telepathy" in capsys.readouterr().err


def test_installed_recipe_name_resolves(capsys):
    from lightalign.training import load_recipe

    recipe = load_recipe("minilab/sft", ["output_dir=/tmp/x"])
    assert recipe.method == "sft" and recipe.path.name == "sft.yaml" and recipe.config.output_dir == "/tmp/x"
    assert load_recipe("minilab/aligner").method == "aligner"


def test_broken_yaml_names_the_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: sft\nlora: [1, 2\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:" in err and "invalid YAML" in err


def test_os_errors_are_one_line_and_a_closed_pipe_is_quiet(monkeypatch, capsys):
    from lightalign.training import cli as train_cli

    def fails(error):
        def run(args):
            raise error
        return run

    monkeypatch.setattr(train_cli, "run", fails(PermissionError(13, "Permission denied", "/ro/out")))
    assert main(["train", "anything.yaml"]) == 2
    assert capsys.readouterr().err == "lightalign train: error: /ro/out: Permission denied\n"
    monkeypatch.setattr(train_cli, "run", fails(OSError(28, "No space left on device")))
    assert main(["train", "anything.yaml"]) == 2
    assert capsys.readouterr().err == "lightalign train: error: No space left on device\n"
    monkeypatch.setattr(train_cli, "run", fails(BrokenPipeError(32, "Broken pipe")))
    assert main(["train", "anything.yaml"]) == 141 and capsys.readouterr().err == ""


@pytest.mark.parametrize("name,content,needle", [
    ("bomb.yaml", "method: sft\nx: [&a0 [x,x,x,x,x,x,x,x,x,x]" + "".join(
        f", &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)) + "]\n", "YAML expands to more than"),
    ("deep.yaml", "method: " + "[" * 100_000 + "]" * 100_000 + "\n", "YAML nested too deeply"),
])
def test_hostile_recipes_are_one_line_errors(tmp_path, name, content, needle):
    (tmp_path / name).write_text(content)
    code, _, err = run_cli("train", str(tmp_path / name))
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_fifo_recipe_is_refused_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "r.yaml")
    code, _, err = run_cli("train", str(tmp_path / "r.yaml"))
    assert code == 2 and "not a regular file" in err


def test_minilab_settings_reach_its_config(tmp_path, capsys):
    """`lightalign lab base.epochs=3` changes the stage config (and so the stage's cache key)."""
    import json

    from lightalign.lab import pipeline

    assert main(["lab", "--small", "--until", "world", "--dir", str(tmp_path), "base.epochs=3", "world.seed=5"]) == 0
    config = json.loads((tmp_path / "lab.json").read_text())["config"]
    assert config["base"]["epochs"] == 3 and config["world"]["seed"] == 5
    small = pipeline.LabConfig.small()
    assert config["base"]["hidden_size"] == small.base.hidden_size  # the rest stays the --small lab's
    changed = pipeline.LabConfig.small()
    changed.base.epochs = 3
    assert pipeline.base_key(changed) != pipeline.base_key(small)
