"""The documentation stays true to the tree: docs/layout.md names every module and bench script, and every relative
link in README.md and docs/*.md points to a file (and heading) that exists."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "docs" / "layout.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
REPO_PATH = re.compile(r"(?<![\w/.-])((?:src|tests|bench|conf)/[\w./-]*[\w/])(?![<*{\w])")  # not `conf/stage/<N>.yaml`
LISTED_MODULE = re.compile(r"^- `([\w/]+\.py)`", re.M)


def modules(src: Path = ROOT / "src" / "eeve") -> list[str]:
    """Every module under ``src``, as a path relative to it; an empty ``__init__.py`` is no module of its own."""
    files = sorted(src.rglob("*.py"))
    return [f.relative_to(src).as_posix() for f in files if f.name != "__init__.py" or f.read_text().strip()]


def unnamed(names: list[str], page: Path) -> list[str]:
    """The names that ``page`` does not mention as inline code (`` `name` ``)."""
    text = page.read_text(encoding="utf-8")
    return [n for n in names if f"`{n}`" not in text]


def prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans, where a link-like text is no link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings, numbered as GitHub numbers repeated ones (``x``, ``x-1``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        s = slug(heading)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file, or whose heading in a Markdown file, does not exist."""
    bad = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


def missing_paths(page: Path) -> list[str]:
    """Paths under src/, tests/, bench/ or conf/ that ``page`` names (in prose or code) and that do not exist."""
    names = dict.fromkeys(n for n in REPO_PATH.findall(page.read_text(encoding="utf-8")) if ".." not in n)  # 1..7
    return [n for n in names if not (ROOT / n).exists()]


def test_layout_names_every_module():
    missing = unnamed(modules(), LAYOUT)
    assert not missing, f"docs/layout.md does not name these modules of src/eeve (add one line each): {missing}"


def test_layout_lists_no_module_that_is_gone():
    section = LAYOUT.read_text(encoding="utf-8").split("\n## src/eeve\n")[-1].split("\n## ")[0]
    listed = LISTED_MODULE.findall(section)
    gone = [m for m in listed if not (ROOT / "src" / "eeve" / m).exists()]
    assert listed and not gone, f"docs/layout.md lists modules that src/eeve no longer has: {gone}"


def test_layout_names_every_bench_script():
    scripts = sorted(f"bench/{p.name}" for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh"))
    missing = unnamed(scripts, LAYOUT)
    assert not missing, f"docs/layout.md does not name these bench scripts (add one line each): {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    bad = broken_links(page)
    assert not bad, f"{page.relative_to(ROOT)} links to what does not exist: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_paths_exist(page):
    missing = missing_paths(page)
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist (moved or renamed?): {missing}"


def test_checks_catch_a_missing_module_and_broken_links(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text('"""A package map."""\n')
    (pkg / "sub" / "new_module.py").write_text("")
    (pkg / "top.py").write_text("")
    assert modules(pkg) == ["sub/__init__.py", "sub/new_module.py", "top.py"]
    layout = tmp_path / "layout.md"
    layout.write_text("- `sub/__init__.py` — map\n- `top.py` — top\n- `sub/new_module.pyc` is not the module\n")
    assert unnamed(modules(pkg), layout) == ["sub/new_module.py"]

    (tmp_path / "other.md").write_text("# Other page\n\n## Café: the `x` part (2)\n\n## Café: the `x` part (2)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[ok](other.md#café-the-x-part-2-1) [ok](#top) [web](https://example.org/none) `[code](gone.md)`\n"
        "```\n[fenced](gone.md)\n```\n[gone](gone.md) [bad anchor](other.md#nowhere) ![img](pic.png)\n"
    )
    assert [b.split()[0] for b in broken_links(page)] == ["gone.md", "other.md#nowhere", "pic.png"]

    page.write_text("See `src/eeve/training/gone.py`, src/eeve/io.py, `conf/stage/<N>.yaml`, conf/stage/1..7.yaml.\n")
    assert missing_paths(page) == ["src/eeve/training/gone.py"]
