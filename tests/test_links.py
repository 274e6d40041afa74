"""Every link and anchor in README.md, CHANGELOG.md and docs/, and every "see FILE, "Section"" pointer in code
comments, requirements.txt and the Makefile, resolves: the file exists and the section is one of its headings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# FILE, "Section": README or a .md path, then a quoted heading (or its start)
POINTER = re.compile(r"\b(README(?:\.md)?|[\w./-]+\.md)(?:'s)?,? \"([^\"]+)\"")
CODE = [*sorted((ROOT / "competition").rglob("*.py")), *sorted((ROOT / "kernels").rglob("*.py")),
        *sorted((ROOT / "scripts").rglob("*.py")), ROOT / "requirements.txt", ROOT / "Makefile",
        ROOT / "kernels" / "kaggle-image.txt"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in headings(path)}


def links() -> list[tuple[Path, str]]:
    found = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        found += [(doc, target) for target in LINK.findall(text) if not target.startswith(("http://", "https://",
                                                                                              "mailto:"))]
    return found


@pytest.mark.parametrize("doc,target", links(), ids=lambda v: str(v).replace(str(ROOT), ""))
def test_every_link_and_anchor_in_the_docs_resolves(doc, target):
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)}: {target}: no such file"
    if anchor:
        assert dest.suffix == ".md" and anchor in anchors(dest), f"{doc.relative_to(ROOT)}: {target}: no such heading"


def pointers() -> list[tuple[Path, int, str, str]]:
    found = []
    for path in CODE:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            found += [(path, lineno, name, section) for name, section in POINTER.findall(line)]
    return found


def target_of(source: Path, name: str) -> Path:
    if name.startswith("README"):
        return ROOT / "README.md"
    for base in (ROOT, source.parent, ROOT / "docs"):
        if (base / name).is_file():
            return base / name
    return ROOT / name


def test_the_pointer_pattern_finds_the_pointers():
    assert len(pointers()) >= 5


@pytest.mark.parametrize("source,lineno,name,section", pointers(), ids=lambda v: str(v).replace(str(ROOT), ""))
def test_every_see_pointer_in_code_and_requirements_resolves(source, lineno, name, section):
    where = f"{source.relative_to(ROOT)}:{lineno}"
    path = target_of(source, name)
    assert path.is_file(), f"{where}: {name}: no such file"
    wanted = section.lower()
    assert any(h.lower().replace("`", "").startswith(wanted.replace("`", "")) for h in headings(path)), \
        f"{where}: {name} has no section {section!r}"
