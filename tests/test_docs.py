"""The documentation holds together: every relative link in README.md and docs/*.md points at a
file of the repository (and, where it names a heading, at a heading of that file), and the README
stays a newcomer's page: at most 250 lines, with the paper-scale figure and the results table in
its first 80."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
README_MAX_LINES, README_FIRST = 250, 80
PAPER_SCALE_FIGURE = "figures/fig1_k25_random_gpu-short.png"


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links():
    for document in DOCUMENTS:
        for target in LINK.findall(prose(document.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            yield document, target


LINKS = list(relative_links())


def test_the_documents_have_links_to_check():
    assert len(DOCUMENTS) >= 8 and len(LINKS) > 50


@pytest.mark.parametrize("document,target", LINKS,
                         ids=[f"{d.relative_to(PROJECT_ROOT)}->{t}" for d, t in LINKS])
def test_every_relative_link_resolves_to_a_file_of_the_repository(document, target):
    path, _, anchor = unquote(target).partition("#")
    resolved = (document.parent / path).resolve() if path else document
    assert resolved.is_relative_to(PROJECT_ROOT), f"{target} leaves the repository"
    assert resolved.exists(), f"{document.name}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{document.name}: no heading #{anchor} in {resolved.name}"


def test_the_readme_is_short_and_shows_the_results_first():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    first = "\n".join(lines[:README_FIRST])
    assert re.search(rf"^!\[[^\]]+\]\({re.escape(PAPER_SCALE_FIGURE)}\)", first, re.M), \
        f"the paper-scale figure is not shown inline in the first {README_FIRST} lines"
    header = next(i for i, line in enumerate(lines) if line.startswith("| figure | run |"))
    end = next(i for i in range(header, len(lines)) if not lines[i].startswith("|"))
    assert end <= README_FIRST, f"the results table ends on line {end}, after line {README_FIRST}"
    assert "`gpu-short`" in lines[header] and "`quick`" in lines[header] and "paper" in lines[header]
