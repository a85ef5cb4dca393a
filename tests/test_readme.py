"""The README keeps the two commands first and documents the contract exactly as the code enforces it."""

from __future__ import annotations

from pathlib import Path

from safetyml.contract import contract_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_contract_matches_the_code():
    assert contract_markdown() in README.read_text()
