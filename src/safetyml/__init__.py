"""safetyml: risk models for a delivery platform's safety team.

The names a notebook reaches for, loaded on first use so ``import safetyml`` (and the CLI) stay fast::

    import safetyml
    safetyml.simulate("data/small", preset="small", seed=7)   # a simulated data folder
    tables = safetyml.load_tables("data/small")                # validated against the data contract
    frame = safetyml.build_frame("incident_risk", tables)      # point-in-time training frame
    result = safetyml.train("incident_risk", "data/small")     # tuned, calibrated, tracked in MLflow
    model = safetyml.load_model("incident_risk")               # the champion RiskModel
    safetyml.explain(model, frame.head())                      # reason codes
    scorer = safetyml.Scorer.from_registry()                   # real-time scoring, as the service does
"""

TYPE_CHECKING = False  # not imported from typing: importing typing would cost 10x `import safetyml`
if TYPE_CHECKING:
    from typing import Any

    from safetyml.explain import explain
    from safetyml.features.frames import build_frame
    from safetyml.model import RiskModel
    from safetyml.scoring.scorer import Scorer
    from safetyml.simulate import simulate
    from safetyml.tables import load_tables
    from safetyml.training.pipeline import train

__version__ = "0.1.0"

# name → (module, attribute); a subpackage that is also callable is returned as the module itself
_API = {
    "simulate": ("safetyml.simulate", None),
    "load_tables": ("safetyml.tables", "load_tables"),
    "build_frame": ("safetyml.features.frames", "build_frame"),
    "train": ("safetyml.training.pipeline", "train"),
    "Scorer": ("safetyml.scoring.scorer", "Scorer"),
    "explain": ("safetyml.explain", None),
}
__all__ = ["Scorer", "build_frame", "explain", "load_model", "load_tables", "simulate", "train"]


def load_model(task: str, alias: str = "champion") -> "RiskModel":
    """The RiskModel registered under ``alias`` (default the champion) for ``task``, from MLflow."""
    from safetyml import tracking

    return tracking.load_model(task, alias)[0]


def __getattr__(name: str) -> "Any":
    if name in _API:
        from importlib import import_module

        module_name, attribute = _API[name]
        module = import_module(module_name)
        if attribute is None:
            from safetyml._callable import make_callable

            make_callable(module_name)  # idempotent; the simulate package makes itself callable too
            return module
        return getattr(module, attribute)
    raise AttributeError(f"module 'safetyml' has no attribute {name!r}")
