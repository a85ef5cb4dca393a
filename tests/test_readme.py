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


def test_readme_links_only_inside_the_repository():
    """Every relative link of the README and docs/ points at a file of the repository (no ../shared/...)."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path = (page.parent / target).resolve()
            if not path.exists() or ROOT not in path.parents:
                broken.append(f"{page.relative_to(ROOT)} → {target}")
    assert not broken, "links to missing or outside files: " + ", ".join(broken)
