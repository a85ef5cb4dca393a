"""The monitoring outputs: one Parquet file per table and a self-contained HTML report.

Like the policy review report (:mod:`safetyml.explain.report`), charts are inline base64 PNGs drawn
with matplotlib and the page is rendered with Jinja2 (autoescaped), so it opens offline.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TEMPLATE = "report.html.j2"  # in safetyml/monitoring/templates


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _f(value: Any, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if not np.isfinite(v) else f"{v:.{digits}f}"


def _ci(row: dict[str, Any], name: str) -> str:
    point = _f(row.get(name))
    if not point:
        return ""
    lo, hi = _f(row.get(f"{name}_lo")), _f(row.get(f"{name}_hi"))
    return f"{point} [{lo}, {hi}]" if lo else point


def psi_chart(stability: pd.DataFrame) -> str | None:
    """Score PSI per week and city (with the 0.1/0.25 bands), and the share of features flagged."""
    import matplotlib.pyplot as plt

    if stability.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    score = stability[stability["feature"] == "score"]
    for city, part in score.groupby("city"):
        axes[0].plot(part["period"], part["psi"], marker="o", label=str(city))
    axes[0].set_title("score PSI by week")
    feats = stability[stability["feature"] != "score"]
    drifted = feats.groupby(["period", "city"])["drifted"].mean().reset_index()
    for city, part in drifted.groupby("city"):
        axes[1].plot(part["period"], part["drifted"], marker="o", label=str(city))
    axes[1].set_title(f"share of the {feats['feature'].nunique()} features flagged as drifted")
    axes[1].set_ylim(0, 1)
    for level, colour in ((0.1, "#e6a100"), (0.25, "#c0392b")):
        axes[0].axhline(level, color=colour, lw=0.8, ls="--")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7)
    return _png(fig)


def performance_chart(perf: pd.DataFrame) -> str | None:
    import matplotlib.pyplot as plt

    if perf.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.plot(perf["period"], perf["est_roc_auc"], marker="s", color="#7f8c8d", label="estimated (CBPE)")
    ax.fill_between(
        perf["period"], perf["est_roc_auc_lo"], perf["est_roc_auc_hi"], color="#bdc3c7", alpha=0.4
    )
    if "roc_auc" in perf:
        mature = perf[perf["mature"]]
        ax.errorbar(
            mature["period"],
            mature["roc_auc"],
            yerr=[mature["roc_auc"] - mature["roc_auc_lo"], mature["roc_auc_hi"] - mature["roc_auc"]],
            fmt="o",
            color="#2c7bb6",
            label="realised (mature)",
        )
    ax.set_title("ROC AUC by week")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return _png(fig)


def nowcast_chart(nowcast: pd.DataFrame) -> str | None:
    import matplotlib.pyplot as plt

    if nowcast.empty:
        return None
    cities = sorted(nowcast["city"].unique())
    fig, axes = plt.subplots(1, len(cities), figsize=(3.2 * len(cities), 3), squeeze=False)
    for ax, city in zip(axes[0], cities, strict=True):
        part = nowcast[nowcast["city"] == city]
        ax.bar(part["day"], part["known"], color="#95a5a6", label="known")
        ax.plot(part["day"], part["corrected"], color="#c0392b", marker=".", label="corrected")
        ax.fill_between(part["day"], part["lower"], part["upper"], color="#e74c3c", alpha=0.2)
        ax.set_title(str(city), fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def alert_charts(signals: pd.DataFrame, firings: pd.DataFrame, limit: int = 6) -> list[str]:
    """The signal of each series whose rule is active now (at most ``limit``)."""
    import matplotlib.pyplot as plt

    if signals.empty or firings.empty:
        return []
    active = firings[firings["active"]]
    charts = []
    for row in active.head(limit).itertuples():
        labels = dict(row.labels)
        series = ",".join(f"{k}={v}" for k, v in labels.items() if k != "indicator") or "all"
        part = signals[
            (signals["rule"] == row.rule_id)
            & (signals["market"] == row.market)
            & (signals["series"] == series)
        ]
        if part.empty:
            continue
        fig, ax = plt.subplots(figsize=(9, 2.6))
        ax.plot(part["time"], part["value"], color="#34495e", lw=1)
        ax.set_ylabel("value")
        ax2 = ax.twinx()
        ax2.plot(part["time"], part["signal"], color="#c0392b", lw=1)
        ax2.fill_between(
            part["time"],
            0,
            1,
            where=part["active"].to_numpy(),
            color="#e74c3c",
            alpha=0.15,
            transform=ax2.get_xaxis_transform(),
        )
        ax2.set_ylabel("signal")
        ax.set_title(f"{row.rule_id} · {row.market} · {series}", fontsize=9)
        charts.append(_png(fig))
    return charts


def build_context(result: Any) -> dict[str, Any]:
    t = result.tables
    stability = t.get("stability", pd.DataFrame())
    movers = t.get("top_movers", pd.DataFrame())
    if len(movers):
        movers = (
            movers[movers["period"] == movers["period"].max()].sort_values("psi", ascending=False).head(20)
        )
    perf = t.get("performance", pd.DataFrame())
    alerts = t.get("alerts", pd.DataFrame())
    return {
        "as_of": f"{result.as_of:%Y-%m-%d %H:%M} UTC",
        "notes": result.notes,
        "changes": {k: len(result.changes.get(k, [])) for k in ("opened", "updated", "resolved")},
        "alerts": alerts.head(100).to_dict("records") if len(alerts) else [],
        "alert_charts": alert_charts(t.get("signals", pd.DataFrame()), t.get("firings", pd.DataFrame())),
        "n_drifted": int(stability["drifted"].sum()) if len(stability) else 0,
        "n_checks": len(stability),
        "psi_chart": psi_chart(stability),
        "movers": [
            {
                **m,
                "psi": _f(m["psi"]),
                "q_value": _f(m["q_value"], 4),
                "top_bin_shift": _f(m["top_bin_shift"], 3),
            }
            for m in movers.to_dict("records")
        ],
        "perf_chart": performance_chart(perf),
        "performance": [
            {
                "period": f"{r['period']:%Y-%m-%d}",
                "mature": "yes" if r["mature"] else "no",
                "rows": f"{int(r['rows']):,}",
                "roc": _ci(r, "roc_auc"),
                "est_roc": _ci(r, "est_roc_auc"),
                "pr": _ci(r, "pr_auc"),
                "est_pr": _f(r.get("est_pr_auc")),
                "ece": _ci(r, "ece"),
            }
            for r in perf.to_dict("records")
        ],
        "level": f"{100 * 0.9:.0f}%",
        "delays": [
            {
                "type": d["type"],
                "market": d["market"],
                "incidents": d["incidents"],
                "p50": _f(d["delay_p50_days"], 2),
                "p90": _f(d["delay_p90_days"], 1),
                "p99": _f(d["delay_p99_days"], 1),
                "within": _f(d["reported_within_1d"], 2),
            }
            for d in t.get("delays", pd.DataFrame()).to_dict("records")
        ],
        "nowcast_chart": nowcast_chart(t.get("nowcast", pd.DataFrame())),
    }


def render(result: Any) -> str:
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    from importlib.resources import files

    source = files("safetyml.monitoring").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source).render(**build_context(result))


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Dict/list cells as JSON text and timestamps kept, so every table writes to Parquet."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, dict | list)).any():
            out[col] = out[col].map(lambda v: json.dumps(v, default=str, sort_keys=True))
    return out


def write_outputs(result: Any, out: Path) -> dict[str, Path]:
    """Every table as ``<name>.parquet`` and the HTML report ``monitoring_report.html`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in result.tables.items():
        if frame is None:
            continue
        path = out / f"{name}.parquet"
        _parquet_safe(frame).to_parquet(path, index=False)
        paths[name] = path
    report = out / "monitoring_report.html"
    report.write_text(render(result), encoding="utf-8")
    paths["report"] = report
    return paths
