"""The layout rules a reader relies on: the product knows nothing of the mini-lab, docs/layout.md's
table names exactly the folders that are installed, and the README stays one short page that links a
docs page per topic (each starting with what a user does and ending with what was measured)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

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


def test_layout_table_matches_the_installed_folders():
    page = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    layout = page[page.index("## Folders"):]
    rows = re.findall(r"^\| `([a-z_]+)/` \| `?([a-z_.\-]+)`? \|", layout, flags=re.M)
    documented = {folder: module for folder, module in rows if module != "-"}
    installed = {folder: module for module, folder in package_dirs().items() if "/" not in folder}
    assert documented == installed


README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 200  # a newcomer reads it in five minutes; everything else lives in docs/


def headings(text: str, level: str = "##") -> list[str]:
    """Markdown headings of one level, outside fenced code blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(rf"^{level} (.+)$", text, flags=re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def local_links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to a docs/ page"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / link.split("#")[0]).resolve() for link in local_links(README)}
    assert DOCS and not [p.name for p in DOCS if p.resolve() not in linked]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_local_links_resolve_to_a_file_and_heading(page):
    broken = []
    for link in local_links(page):
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(link)
        elif fragment and (path.suffix != ".md" or fragment not in
                           {anchor(h) for level in ("#", "##", "###", "####")
                            for h in headings(path.read_text(encoding="utf-8"), level)}):
            broken.append(link)
    assert not broken, f"{page.name}: {broken}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_pages_start_with_what_a_user_does_and_end_with_what_was_measured(page):
    sections = headings(page.read_text(encoding="utf-8"))
    assert sections[0] == "What you do" and sections[-1] == "What was measured", sections
