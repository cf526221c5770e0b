"""The `lightalign` command. Each subcommand lives in the folder of its concept as a light
`cli.py` (argparse only: heavy imports happen inside `run`), so `lightalign --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lightalign import __version__
from lightalign.errors import UserError

# name -> module with add_arguments(parser) and run(args) -> int | None
COMMANDS = {
    "lab": "lightalign.lab.cli",
    "train": "lightalign.train_cli",
    "estimate": "lightalign.adapters.estimate_cli",
    "merge": "lightalign.adapters.merge_cli",
    "correct": "lightalign.aligner.cli",
    "eval": "lightalign.evaluation.cli",
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
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("lightalign"):
                continue  # a capability not built yet: the command is simply absent
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


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
    except FileNotFoundError as e:
        sys.stderr.write(f"lightalign {args.command}: error: {e.filename or e}: file not found\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"lightalign {args.command}: interrupted (finished work is kept; run again to resume)\n")
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
