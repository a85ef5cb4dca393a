"""The README keeps the two commands first and stays short; the contract page documents the contract exactly
as the code enforces it."""

from __future__ import annotations

import re
from pathlib import Path

from safetyml.contract import contract_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONTRACT_PAGE = ROOT / "docs" / "contract.md"
README_BUDGET_BYTES = 15 * 1024


def test_readme_opens_with_the_two_commands():
    head = README.read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_stays_short():
    size = len(README.read_bytes())
    assert size <= README_BUDGET_BYTES, f"README.md is {size} bytes; move details to docs/ (budget 15 KB)"


def test_contract_page_matches_the_code():
    assert contract_markdown() in CONTRACT_PAGE.read_text(), (
        "docs/contract.md is out of date: paste `safetyml validate --describe` output into it"
    )


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (code blocks skipped)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_stay_inside_the_repository_and_find_their_section():
    """Every relative link of the README and docs/ points at a file of the repository (no ../shared/...),
    and at a heading of it when it names one."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path = (page.parent / target).resolve() if target else page
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{page.relative_to(ROOT)} → {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.relative_to(ROOT)} → {target}#{anchor}")
    assert not broken, "links to missing or outside files or sections: " + ", ".join(broken)
