"""Every command the README shows runs as written.

Each shell line of the README's fenced blocks is checked without heavy work: `make` targets exist,
`pip` extras exist in pyproject.toml, `lightalign` invocations parse with the real CLI parser (so a
subcommand or flag that is gone fails here), recipes load through the one recipe loader with their
overrides, eval configs load, files read exist in the repository or are ones `make lab` writes, and
`lightalign estimate` actually runs. Python snippets compile, their imports resolve, and the
attributes and keyword arguments they use on lightalign objects exist. Commands this test does not
run say why in NOT_RUN. The docs pages get a lighter check: subcommands, flags and repository files.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import shlex
import tomllib
import typing
from pathlib import Path

import pytest

from lightalign.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHELL = {"bash", "sh", "shell", "console"}

# Commands this test runs here (cheap, no model, no network).
RUN_HERE = {("lightalign", "estimate"): "arithmetic over a recipe: runs in well under a second"}

# Commands it does not run, and why; what it checks instead is in the module docstring.
NOT_RUN = {
    ("make", "lab"): "builds and trains the whole mini-lab (~21 min on 2 cores); the slow tests run a small one",
    ("make", "test"): "the whole suite, this test included",
    ("make", "real"): "installs three packages and trains on SmolLM2-135M-Instruct (~53 min)",
    ("pip", "install"): "installs from the package index into the current environment",
    ("pip", "wheel"): "builds a wheel into dist/ (a packaging step, minutes)",
    ("lightalign", "lab"): "the mini-lab itself (see make lab)",
    ("lightalign", "train"): "trains a model on the lab's data, minutes of CPU",
    ("lightalign", "merge"): "reads an adapter `make lab` trains",
    ("lightalign", "correct"): "reads the Aligner `make lab` trains",
    ("lightalign", "eval"): "generates with the models `make lab` trains",
    ("lightalign", "app"): "serves a page until stopped, on models `make lab` trains",
    ("lightalign", "serve"): "serves an endpoint until stopped, on models `make lab` trains",
}

# Arguments of each subcommand that name something to read (the rest are outputs or values).
INPUTS = {
    "train": ["recipe"], "estimate": ["recipe", "accelerate_config"], "merge": ["adapter", "base"],
    "correct": ["aligner", "in_path", "upstream_model_path", "upstream_adapter", "upstream_file"],
    "eval": ["config"], "elasticity": ["config"], "app": ["config", "base", "adapter", "aligner"],
    "serve": ["aligner", "upstream_model_path", "upstream_adapter"], "lab": [],
}
# Recipe keys that name something to read.
RECIPE_INPUTS = [("model", "name_or_path"), ("data", "path"), ("lora", "init_from")]


# ---------------------------------------------------------------- extracting the commands

def fenced_blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, line number, body) of each fenced code block."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1).lower(), text[:m.start()].count("\n") + 1, m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)]


def shell_commands(path: Path) -> list[tuple[str, list[str]]]:
    """("README.md:LINE", argv) for every command of every shell block; pipes and && split commands."""
    out = []
    for lang, start, body in fenced_blocks(path):
        if lang not in SHELL:
            continue
        lines = body.replace("\\\n", " ").splitlines()
        for offset, line in enumerate(lines):
            tokens = shlex.split(line, comments=True)
            argv: list[str] = []
            for token in tokens + ["|"]:
                if token in {"|", "&&", ";", "||"}:
                    if argv:
                        out.append((f"{path.name}:{start + 1 + offset}", argv))
                    argv = []
                else:
                    argv.append(token)
    return out


def python_snippets(path: Path) -> list[tuple[str, str]]:
    return [(f"{path.name}:{start}", body) for lang, start, body in fenced_blocks(path) if lang == "python"]


def key(argv: list[str]) -> tuple[str, str]:
    return (Path(argv[0]).name, argv[1] if len(argv) > 1 else "")


README_COMMANDS = shell_commands(README)


# ---------------------------------------------------------------- what the commands may name

def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, flags=re.M))


def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["optional-dependencies"])


def lab_outputs() -> set[str]:
    """What `make lab` writes under runs/minilab that a README command may read: the data splits (built
    here for a small world: the same names), the stages' folders, the report's config and the app's."""
    from lightalign.lab import pipeline, report
    from lightalign.lab.splits import build_splits
    from lightalign.lab.world import World

    data = {f"data/{name}.jsonl" for name in build_splits(World(pipeline.LabConfig.small().world))}
    adapters = {f"adapters/{name}" for name in [*report.ADAPTERS, "w2s_dpo"]}
    app = {str(Path(p).relative_to(Path("runs/minilab").resolve())) for p in report.app_config(Path("runs/minilab")).values()
           if isinstance(p, str) and p.startswith(str(Path("runs/minilab").resolve()))}
    return data | adapters | app | {"base", "aligner", "lab.json", "app.yaml", "report/eval.yaml", "report/report.md",
                                    "data/world.json"}


LAB = "runs/minilab/"


def readable(path: str, outputs: set[str]) -> bool:
    """A path a command reads exists here, or `make lab` writes it."""
    if path == "-" or (ROOT / path).exists():
        return True
    return path.startswith(LAB) and path[len(LAB):].rstrip("/") in outputs


# ---------------------------------------------------------------- checking one command

def check_make(argv):
    missing = [t for t in argv[1:] if not t.startswith("-") and "=" not in t and t not in make_targets()]
    assert not missing, f"make: no target {missing} in the Makefile"


def check_pip(argv):
    assert argv[1] in {"install", "wheel"}, f"pip {argv[1]}: not a command the README should teach"
    for arg in argv[2:]:
        m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        if m and m.group(1):
            unknown = set(m.group(1).split(",")) - extras()
            assert not unknown, f"pip: no extra {sorted(unknown)} in pyproject.toml"


def parse(argv):
    parser = build_parser()
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"`lightalign {' '.join(argv)}` does not parse (exit {e.code})") from None


def check_lightalign(argv, outputs):
    args = parse(argv[1:])
    for dest in INPUTS[args.command]:
        value = getattr(args, dest, None)
        value = str(value) if value else None
        if value and value != "none" and not value.startswith(("http", "pkg:")):
            if args.command in {"train", "estimate", "eval"} and dest in {"recipe", "config"}:
                continue  # resolved through the recipe loader below
            assert readable(value, outputs), f"{dest} {value}: not in the repository and not written by `make lab`"
    if args.command == "train":
        from lightalign.training import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)  # unknown recipe or key: UserError
        for section, field in RECIPE_INPUTS:
            value = getattr(getattr(recipe.config, section, None), field, None)
            if isinstance(value, str) and value.startswith("runs/"):
                assert readable(value, outputs), f"{section}.{field} {value}: `make lab` does not write it"
    if args.command == "eval":
        from lightalign.config import load_config
        from lightalign.evaluation.cli import config_path
        from lightalign.evaluation.config import EvalConfig

        if not args.config.startswith(LAB):
            load_config(EvalConfig, config_path(args), args.overrides)
        else:
            assert readable(args.config, outputs), f"{args.config}: `make lab` does not write it"
    if args.command == "estimate":
        assert main(argv[1:]) == 0, f"`{' '.join(argv)}` failed"


def check_command(argv, outputs):
    program = Path(argv[0]).name
    if program == "make":
        check_make(argv)
    elif program == "pip":
        check_pip(argv)
    elif program == "lightalign":
        check_lightalign(argv, outputs)
    elif program == "cat":
        assert all(readable(a, outputs) for a in argv[1:]), argv
    else:
        raise AssertionError(f"{program}: this test does not know how to check it; teach check_command")


@pytest.fixture(scope="module")
def outputs():
    return lab_outputs()


@pytest.mark.parametrize("where, argv", README_COMMANDS, ids=[w for w, _ in README_COMMANDS])
def test_readme_command(where, argv, outputs):
    check_command(argv, outputs)


def test_the_readme_shows_the_two_commands_and_every_one_not_run_here_says_why():
    keys = [key(argv) for _, argv in README_COMMANDS]
    assert keys[:2] == [("make", "lab"), ("make", "test")]
    unexplained = [(w, " ".join(a)) for w, a in README_COMMANDS if key(a) not in RUN_HERE and key(a) not in NOT_RUN]
    assert not unexplained, f"say in NOT_RUN why these are not run, or run them: {unexplained}"
    assert any(k in RUN_HERE for k in keys)


def test_a_missing_subcommand_flag_recipe_or_target_fails(outputs):
    """The checks above would catch a README that names something the project does not have."""
    for argv in (["lightalign", "corect", "--aligner", "runs/minilab/aligner"],
                 ["lightalign", "correct", "--aligner", "runs/minilab/aligner", "--no-such-flag"],
                 ["lightalign", "train", "minilab/no_such_recipe"],
                 ["lightalign", "train", "minilab/sft", "lora.rank=8"],
                 ["lightalign", "correct", "--aligner", "runs/minilab/no_such_aligner", "--in", "a.jsonl"],
                 ["make", "no-such-target"],
                 ["pip", "install", ".[no-such-extra]"]):
        with pytest.raises(Exception):
            check_command(argv, outputs)


# ---------------------------------------------------------------- python snippets

def resolve_hint(func, name: str = "return"):
    """The class a callable's annotation names, or None (strings resolved in the callable's module)."""
    try:
        hint = typing.get_type_hints(func).get(name)
    except Exception:
        hint = inspect.signature(func).return_annotation
    if isinstance(hint, typing.ForwardRef):
        hint = hint.__forward_arg__
    if isinstance(hint, str):
        hint = vars(importlib.import_module(func.__module__)).get(hint.strip("'\""))
    return hint if inspect.isclass(hint) else None


def has_attr(cls, attr: str) -> bool:
    if hasattr(cls, attr):
        return True
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    annotated = {a for c in cls.__mro__ for a in getattr(c, "__annotations__", {})}
    return attr in fields | annotated


def check_call_keywords(func, call: ast.Call, where: str):
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k.arg for k in call.keywords if k.arg and k.arg not in params]
    assert not unknown, f"{where}: {getattr(func, '__qualname__', func)} takes no {unknown}"


def check_python(where: str, source: str):
    tree = ast.parse(source, where)  # a SyntaxError names the snippet
    objects: dict[str, object] = {}     # name -> imported object
    instances: dict[str, type] = {}     # name -> the class of the value bound to it
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
                objects[alias.asname or alias.name] = getattr(module, alias.name)

    def callee(func_node):
        """(callable, class it belongs to) for Name(...), Class.attr(...) and instance.attr(...)."""
        if isinstance(func_node, ast.Name) and func_node.id in objects:
            return objects[func_node.id]
        if isinstance(func_node, ast.Attribute) and isinstance(func_node.value, ast.Name):
            owner = objects.get(func_node.value.id) or instances.get(func_node.value.id)
            if owner is not None and (inspect.isclass(owner) or inspect.ismodule(owner)):
                assert has_attr(owner, func_node.attr), f"{where}: {owner.__name__} has no {func_node.attr}"
                return getattr(owner, func_node.attr, None)
        return None

    for node in ast.walk(tree):  # statements in order: ast.walk visits a module's body first
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = objects.get(node.value.id) or instances.get(node.value.id)
            if owner is not None and (inspect.isclass(owner) or inspect.ismodule(owner)):
                assert has_attr(owner, node.attr), f"{where}: {owner.__name__} has no {node.attr}"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            func = callee(node.value.func)
            cls = func if inspect.isclass(func) else (resolve_hint(func) if callable(func) else None)
            if cls is not None:
                instances[node.targets[0].id] = cls
        if isinstance(node, ast.Call):
            func = callee(node.func)
            if callable(func):
                check_call_keywords(func.__init__ if inspect.isclass(func) else func, node, where)


@pytest.mark.parametrize("where, source", python_snippets(README), ids=[w for w, _ in python_snippets(README)])
def test_readme_python_snippet(where, source):
    check_python(where, source)


def test_a_snippet_using_a_missing_name_fails():
    good = 'from lightalign.aligner import Aligner\na = Aligner.from_pretrained("x")\nfix = a.correct("q", "a")\nfix.text\n'
    check_python("good", good)
    for bad in (good.replace("fix.text", "fix.corrected_text"), good.replace("a.correct(", "a.fix("),
                good.replace("import Aligner", "import Aligner, Realigner"),
                'from lightalign.training import load_recipe\nload_recipe("minilab/sft", overides=[])\n'):
        with pytest.raises(AssertionError):
            check_python("bad", bad)


# ---------------------------------------------------------------- the docs pages, lighter

def option_strings(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return set(sub._option_string_actions)


REPO_PATH = re.compile(r"^(recipes|benchmarks|tests|docs|lab|adapters|aligner|evaluation|serve|app|training)/[\w./-]+$")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_commands_in_every_page_name_real_subcommands_flags_and_files(page):
    problems = []
    for where, argv in shell_commands(page):
        if argv[0] == "make":
            problems += [f"{where}: make {t}" for t in argv[1:] if t not in make_targets()]
        if argv[0] == "pip":
            try:
                check_pip(argv)
            except AssertionError as e:
                problems.append(f"{where}: {e}")
        if "lightalign" in argv:  # also `accelerate launch ... -m lightalign train ...`
            rest = argv[argv.index("lightalign") + 1:]
            if not rest or rest[0] not in INPUTS:
                problems.append(f"{where}: lightalign {rest[:1]}: no such subcommand")
                continue
            flags = {a.split("=")[0] for a in rest if a.startswith("--")}
            problems += [f"{where}: lightalign {rest[0]} {f}: no such option" for f in flags - option_strings(rest[0])]
        problems += [f"{where}: {a}: no such file" for a in argv if REPO_PATH.match(a) and not (ROOT / a).exists()]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_python_in_docs_compiles_and_its_imports_resolve(page):
    for where, source in python_snippets(page):
        check_python(where, source)
