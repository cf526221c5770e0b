"""The `lightalign` command. Each subcommand lives in the folder of its concept as a light
`cli.py` (argparse only: heavy imports happen inside `run`), so `lightalign --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lightalign import __version__
from lightalign.errors import UserError

# Optional third-party packages -> the extra that installs them, for a one-line hint when one is missing.
EXTRAS = {"peft": "train", "trl": "train", "bitsandbytes": "train", "accelerate": "train", "datasets": "train",
          "matplotlib": "eval", "gradio": "app", "fastapi": "serve", "uvicorn": "serve", "gguf": "gguf"}

# name -> module with add_arguments(parser) and run(args) -> int | None
COMMANDS = {
    "lab": "lightalign.lab.cli",
    "train": "lightalign.training.cli",
    "estimate": "lightalign.adapters.estimate_cli",
    "merge": "lightalign.adapters.merge_cli",
    "correct": "lightalign.aligner.cli",
    "eval": "lightalign.evaluation.cli",
    "elasticity": "lightalign.evaluation.elasticity_cli",
    "app": "lightalign.app.cli",
    "serve": "lightalign.serve.cli",
}


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + error; users asked for one clear line and exit code 2."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lightalign",
                     description="Cheap, gentle LLM alignment: alignment adapters and the Aligner.")
    parser.add_argument("--version", action="version", version=f"lightalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)  # a missing lightalign module is a bug: let it raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of unwritable output raises nothing."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except UserError as e:
        sys.stderr.write(f"lightalign {args.command}: error: {e}\n")
        return 2
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if not top or top == "lightalign":
            raise  # our own module missing: a bug, shown with its traceback
        extra = EXTRAS.get(top)
        hint = f"pip install 'lightalign[{extra}]'" if extra else f"pip install {top}"
        sys.stderr.write(f"lightalign {args.command}: error: needs the optional package {top!r} ({hint})\n")
        return 2
    except FileNotFoundError as e:
        sys.stderr.write(f"lightalign {args.command}: error: {e.filename or e}: file not found\n")
        return 2
    except BrokenPipeError:  # `lightalign ... | head`: the reader left; nothing to report
        _silence_stdout()
        return 141
    except OSError as e:  # disk full, permission denied, read-only folder: the system's reason, one line
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"lightalign {args.command}: error: {where}{e.strerror or e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"lightalign {args.command}: interrupted (finished work is kept; run again to resume)\n")
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
