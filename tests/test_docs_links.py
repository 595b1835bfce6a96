"""Every relative link of the README and docs/ points at a file of the repository that
exists and, with an ``#anchor``, at a heading (GitHub's slug) or an ``<a id>`` of it."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: ``[text](target)`` or ``[text](target "title")``, one level of brackets in the text
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
#: fenced code (``` or ~~~, indented or not), where a ``#`` line is no heading
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?^[ \t]*\1", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (a link's text, no HTML tag) in
    lower case, keeping letters, marks, decimal digits, connector punctuation, ``-`` and
    spaces, each space a hyphen.

    >>> slug("Round 39: AdaBreg's small targets — a start? (negative)")
    'round-39-adabregs-small-targets--a-start-negative'
    >>> slug("S²-LBI in [the paper](x.md), `λ` ≤ 2")
    's-lbi-in-the-paper-λ--2'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"<[^>]+>", "", text).lower()
    keep = (
        c
        for c in text
        if c in "- "
        or unicodedata.category(c)[0] in "LM"
        or unicodedata.category(c) in ("Nd", "Pc")
    )
    return "".join(keep).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The headings' slugs (a repeated one with ``-1``, ``-2``, …) and the explicit
    ``<a id="…">`` anchors of a page."""
    text = FENCE.sub("", page.read_text())
    out: set[str] = set(re.findall(r'<a id="([^"]+)"', text))
    seen: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if "://" not in t]


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that reach no file under ``root`` (the
    repository), or no anchor of the page they name."""
    out = []
    for target in links(page):
        if target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or not dest.is_relative_to(root):
            out.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(target)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    assert not broken(page), f"{page.name}: {broken(page)}"


def test_the_checker_sees_a_broken_anchor_and_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text(
        "# One\n## Two: three\n## Two: three\n"
        '<a id="x"></a>[x](#two-three-1) [y](#four) [z](#x "t") [w](b.md)\n'
        "```\n# not a heading\n[v](#nowhere)\n```\n"
        "  ~~~sh\n  # not one either\n  ~~~\n"
    )
    assert anchors(page) == {"one", "two-three", "two-three-1", "x"}
    assert links(page) == ["#two-three-1", "#four", "#x", "b.md"]
    assert broken(page, root=tmp_path) == ["#four", "b.md"]
