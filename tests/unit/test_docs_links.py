"""Every relative link in README.md, docs/*.md and deploy/README.md reaches a file and a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(path: Path) -> list[str]:
    """Return the page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """Return GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Return every anchor the page's headings make (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose_lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """Return the page's links that are not URLs (code spans and blocks left out)."""
    links = []
    for line in _prose_lines(path):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                links.append(target)
    return links


def _link_cases() -> list[tuple[Path, str]]:
    return [(page, link) for page in PAGES for link in dict.fromkeys(relative_links(page))]


def test_the_manual_exists() -> None:
    names = {page.name for page in PAGES}
    assert {"api.md", "client.md", "guarantees.md", "operations.md", "performance.md"} <= names


def test_readme_links_into_every_page_of_the_manual() -> None:
    linked = {link.split("#")[0] for link in relative_links(ROOT / "README.md")}
    manual = {f"docs/{page.name}" for page in PAGES if page.parent.name == "docs"}
    assert manual <= linked


@pytest.mark.parametrize(
    ("page", "link"),
    _link_cases(),
    ids=[f"{page.relative_to(ROOT)}->{link}" for page, link in _link_cases()],
)
def test_relative_link_reaches_a_file_and_a_heading(page: Path, link: str) -> None:
    target, _, anchor = link.partition("#")
    destination = (page.parent / target).resolve() if target else page
    assert destination.exists(), f"{page.name}: {link} names no file"
    assert ROOT in destination.parents or destination == ROOT, f"{link} leaves the repository"
    if anchor:
        assert destination.suffix == ".md", f"{page.name}: {link} anchors into a non-page"
        assert anchor in anchors(destination), f"{page.name}: no heading makes #{anchor}"


def test_slug_follows_github() -> None:
    assert slug("The client and `wickson-batch delete`") == "the-client-and-wickson-batch-delete"
    assert slug("API reference (/docs and /openapi.json)") == "api-reference-docs-and-openapijson"
    assert slug("Retrying safely: Idempotency-Key") == "retrying-safely-idempotency-key"
