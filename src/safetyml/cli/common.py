"""Helpers shared by the CLI modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from safetyml.engine import EngineChoice

_err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an actionable error to stderr and exit with ``code`` (2: bad input, 1: checks failed)."""
    # the message is text, not markup: "safetyml[dask]" or a list repr must print as written
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def engine_option() -> Any:
    """The ``--engine`` option every heavy command takes (resolved by :func:`engine_choice`)."""
    return typer.Option(
        "pandas",
        "--engine",
        help="pandas (one process, the default) or dask (a cluster; needs safetyml[dask]).",
    )


def scheduler_option() -> Any:
    """The ``--scheduler`` option that goes with ``--engine dask``."""
    return typer.Option(
        None,
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786; default DASK_SCHEDULER_ADDRESS, else a LocalCluster "
        "of one process per core on 127.0.0.1).",
    )


def as_of_option(what: str) -> Any:
    """The ``--as-of`` option of commands reading a data folder; ``what`` says what the time is."""
    return typer.Option(
        None,
        "--as-of",
        help=f"{what} (UTC, ISO 8601). Default: just after the last trip in the data.",
    )


def features_option() -> Any:
    """The ``--features`` option: reuse a built incident_risk frame instead of building features again."""
    return typer.Option(
        None, "--features", help="A features-built incident_risk frame to reuse instead of building one."
    )


def engine_choice(engine: str, scheduler: str | None, **kwargs: Any) -> EngineChoice:
    """Resolve the engine flags through :mod:`safetyml.engine`, turning a bad flag or a missing extra into
    an actionable CLI error (every heavy command has a Dask path: none refuses the choice)."""
    from safetyml._optional import MissingExtraError
    from safetyml.engine import EngineError, resolve

    try:
        choice = resolve(engine, scheduler, **kwargs)
    except (EngineError, MissingExtraError) as exc:
        fail(str(exc))
    return choice


@contextmanager
def stage(description: str, console: Console | None = None) -> Iterator[None]:
    """One stage of a long command on its own line: a spinner and the elapsed time while it runs, a tick
    and its duration once done (so a long build shows where it is and where the time went)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        job = bar.add_task(description, total=1)
        yield
        bar.update(job, completed=1)
