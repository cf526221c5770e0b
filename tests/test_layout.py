"""The layout rules a reader relies on: the product knows nothing of the mini-lab, and the README's
layout table names exactly the folders that are installed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("lightalign", "training", "adapters", "aligner", "evaluation", "app", "serve")
# The entry point lists every command, `lightalign lab` included; nothing else in the product may.
ENTRY = {Path("lightalign/cli.py"), Path("lightalign/__init__.py")}


def package_dirs() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["tool"]["setuptools"]["package-dir"]


def test_product_folders_never_name_the_lab():
    offenders = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT) in ENTRY:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "lightalign.lab" in line or re.search(r"\bfrom \.+lab\b|\bimport lab\b", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_installed_folder_is_a_product_folder_or_the_lab():
    """Sub-packages belong to their top-level folder (lab/real is part of the lab)."""
    folders = set(package_dirs().values())
    assert {f.split("/")[0] for f in folders} == set(PRODUCT) | {"lab", "recipes"}, folders
    assert all(f.split("/")[0] == "lab" for f in folders if "/" in f), folders


def test_readme_layout_table_matches_the_installed_folders():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    rows = re.findall(r"^\| `([a-z_]+)/` \| `?([a-z_.\-]+)`? \|", layout, flags=re.M)
    documented = {folder: module for folder, module in rows if module != "-"}
    installed = {folder: module for module, folder in package_dirs().items() if "/" not in folder}
    assert documented == installed
