"""Helpers shared by the CLI modules."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

_err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an actionable error to stderr and exit with ``code`` (2: bad input, 1: checks failed)."""
    # the message is text, not markup: "safetyml[dask]" or a list repr must print as written
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)
