"""The ``safetyml`` command line. Each area registers its commands from its own module.

Area modules are listed by name in AREA_MODULES. Each keeps its heavy imports (mlflow, bentoml, shap,
dask) inside its commands, so ``safetyml --help`` stays fast; a module that fails to import stops the CLI.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="safetyml",
    help="Risk models for a delivery platform's safety team.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Each module defines ``register(app)``; listed here in the order of the data flow.
AREA_MODULES = (
    "safetyml.cli.data",  # simulate, validate
    "safetyml.cli.features",  # features list|build|materialize
    "safetyml.cli.training",  # train, promote, ui, experiment run
    "safetyml.cli.explain",  # explain case|report
    "safetyml.cli.serving",  # serve, decisions show|export
    "safetyml.cli.batch",  # score-zones, score-file
    "safetyml.cli.monitor",  # monitor run|alerts|ack
    "safetyml.cli.index",  # index build|report|history
)

__all__ = ["AREA_MODULES", "app", "main"]


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register_areas() -> None:
    """Import every area module and let it add its commands; a module that fails to import stops the CLI.

    Failing loudly is on purpose: skipping a broken or renamed module would make its commands vanish
    without notice. Area modules keep heavy imports inside their commands, so this stays fast.
    """
    for name in AREA_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"safetyml CLI: area module {name} failed to import: {exc}") from exc
        module.register(app)


_register_areas()


def main() -> None:
    app()
