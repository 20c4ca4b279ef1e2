"""The documentation's relative links resolve: every `[text](target)` in README.md, docs/*.md and benchmarks/README.md
names a file that exists, and a `#fragment` into a Markdown file names one of its headings. The README stays short."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
README_MAX_LINES = 260

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks (their `#` lines are not headings, their brackets not links)."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Link targets of `[text](target)`, outside code."""
    return LINK.findall(INLINE_CODE.sub("", prose(text)))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, lowercase, punctuation but hyphens and spaces removed, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page, a repeated heading's with GitHub's `-1`, `-2`, ... suffixes."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s)://, mailto:, ... and links within the page
        path, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve()
        if not resolved.exists():
            problems.append(f"{target}: {resolved} does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading '#{fragment}' in {resolved}")
    return problems


def test_the_pages_exist():
    assert (ROOT / "docs" / "index.md").exists()
    assert all(page.exists() for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    assert broken_links(page) == []


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"
    )


def test_slug_follows_github():
    assert slug("Limits / not yet") == "limits--not-yet"
    assert slug("Distance to the machine's limit (`roofline.py`)") == "distance-to-the-machines-limit-rooflinepy"
    assert slug("[Data](data.md) and `train_step.py`") == "data-and-train_steppy"
