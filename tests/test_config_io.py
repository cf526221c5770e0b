"""Typed configs from YAML with overrides, and JSONL helpers that name file and line."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from lightalign.config import load_config
from lightalign.errors import UserError
from lightalign.io import append_jsonl, read_jsonl, write_jsonl


@dataclass
class Lora:
    r: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class Recipe:
    name: str
    lora: Lora = field(default_factory=Lora)
    quant: Literal["nf4", "none"] = "nf4"
    lr: float = 1e-4
    note: Optional[str] = None

    def validate(self):
        if self.lr <= 0:
            raise ValueError("field 'lr' must be positive")


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_overrides_apply_and_types_coerce(tmp_path):
    p = write(tmp_path, "name: a\nlora: {r: 4}\n")
    cfg = load_config(Recipe, p, ["lora.alpha=32", "lr=2e-4", "quant=none", "lora.targets=[q_proj,v_proj]"])
    assert cfg.lora == Lora(r=4, alpha=32.0, targets=["q_proj", "v_proj"])
    assert cfg.lr == 2e-4 and cfg.quant == "none"


@pytest.mark.parametrize("text,overrides,needle", [
    ("name: a\nlora: {rank: 4}\n", [], "unknown key 'lora.rank' (known: r, alpha, targets)"),
    ("name: a\nlora: {alhpa: 4}\n", [], "unknown key 'lora.alhpa' (did you mean 'lora.alpha'?)"),
    ("name: a\n", ["lora.r=four"], "field 'lora.r' expects an integer"),
    ("name: a\n", ["quant=int3"], "field 'quant' must be one of"),
    ("lora: {}\n", [], "missing required key 'name'"),
    ("name: a\n", ["lr=-1"], "must be positive"),
    ("name: a\n", ["lr"], "must look like key=value"),
])
def test_errors_name_file_and_field(tmp_path, text, overrides, needle):
    p = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_config(Recipe, p, overrides)
    assert needle in str(e.value)


def test_jsonl_errors_name_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(UserError, match=r"x.jsonl:3: invalid JSON"):
        read_jsonl(p)
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"x.jsonl:2: expected a JSON object"):
        read_jsonl(p)


def test_write_is_atomic_and_append_is_durable(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl(p, [{"a": 1}])
    with p.open("a") as f:
        append_jsonl(f, {"a": 2})
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert [x.name for x in tmp_path.iterdir()] == ["out.jsonl"]  # no temp files left behind


@pytest.mark.parametrize("text,overrides,needle", [
    ("name: a\n", ["lr=nan"], "field 'lr' expects a finite number"),
    ("name: a\n", ["lr=.inf"], "field 'lr' expects a finite number"),
    ("name: a\n", ["lr=1e400"], "field 'lr' expects a finite number"),
    ("name: a\n", ["lora.r=99999999999999999999999999"], "field 'lora.r' is out of range"),
    ("name: a\n", ["=5"], "the key must be dotted names"),
    ("name: a\n", ["lora..r=5"], "the key must be dotted names"),
    ("name: !!python/object/apply:os.system [echo]\n", [], r"r.yaml:1: invalid YAML: could not determine a constructor"),
])
def test_hostile_values_and_overrides_are_one_line_errors(tmp_path, text, overrides, needle):
    with pytest.raises(UserError, match=needle):
        load_config(Recipe, write(tmp_path, text), overrides)


def test_a_yaml_alias_bomb_and_deep_nesting_are_refused_quickly(tmp_path):
    bomb = "name: [&a0 [x,x,x,x,x,x,x,x,x,x]" + "".join(
        f", &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)) + "]\n"
    with pytest.raises(UserError, match=r"r.yaml: YAML expands to more than"):
        load_config(Recipe, write(tmp_path, bomb))
    with pytest.raises(UserError, match=r"r.yaml: YAML nested too deeply"):
        load_config(Recipe, write(tmp_path, "name: " + "[" * 50_000 + "]" * 50_000 + "\n"))
    # a few honest aliases still load
    assert load_config(Recipe, write(tmp_path, "name: &n a\nlora: {r: 4}\n")).name == "a"


def test_a_huge_value_in_an_error_is_cut_short(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(Recipe, write(tmp_path, "name: [" + ", ".join(["x" * 100] * 1000) + "]\n"))
    assert "field 'name' expects a string" in str(e.value) and len(str(e.value).split(" got ")[1]) < 200
