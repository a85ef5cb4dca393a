"""The index report: one self-contained HTML file (Jinja2 template, inline SVG, no network).

It is rendered from the files ``build`` wrote (so ``safetyml index report`` can redo it at any time):
ranked cities with their rank intervals, the pillar breakdown, a change waterfall per city, a zone map
coloured by the zone index (the zone map's H3 hexagons, from :func:`safetyml.batch.geo.cell_ring`),
trends, the sensitivity analysis, the imputation report and the indicator framework.
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from safetyml.index.config import IndexConfig, load_config

TEMPLATE = "report.html.j2"
MAP_SIZE = 420
_SMALL = 'font-size="10" text-anchor="middle"'
PILLAR_COLOURS = ("#3b6ea5", "#d9822b", "#5a9e4b", "#8e5ea2", "#c44e52", "#777777")


def score_colour(score: float) -> str:
    """Fill of a zone from its score (0 safest → 100 least safe), matplotlib's RdYlBu reversed."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if score is None or not math.isfinite(score):
        return "#cccccc"
    return to_hex(colormaps["RdYlBu_r"](min(max(score, 0.0), 100.0) / 100.0))


def _esc(value: Any) -> str:
    return html.escape(str(value))


# ---------------------------------------------------------------------------------------------- charts


def rank_bar(low: int, high: int, rank: int, n: int, width: int = 160) -> str:
    """The rank interval as a bar on the 1..n axis with the nominal rank as a dot."""
    if n <= 1:
        return ""
    x = lambda r: 6 + (width - 12) * (r - 1) / (n - 1)  # noqa: E731
    return (
        f'<svg width="{width}" height="14" role="img">'
        f'<line x1="6" y1="7" x2="{width - 6}" y2="7" stroke="#ddd"/>'
        f'<rect x="{x(low):.1f}" y="3" width="{max(x(high) - x(low), 2):.1f}" height="8" fill="#9bb7d4"/>'
        f'<circle cx="{x(rank):.1f}" cy="7" r="4" fill="#1f3f66"/></svg>'
    )


def stacked_bar(parts: list[tuple[str, float]], total: float, width: int = 300) -> str:
    """Pillar contributions (summing to the score) as one stacked bar on a 0-100 axis."""
    out, x = [f'<svg width="{width}" height="16" role="img">'], 0.0
    for i, (name, value) in enumerate(parts):
        w = max(value, 0.0) / 100.0 * width
        colour = PILLAR_COLOURS[i % len(PILLAR_COLOURS)]
        out.append(
            f'<rect x="{x:.1f}" y="1" width="{w:.1f}" height="14" fill="{colour}">'
            f"<title>{_esc(name)}: {value:.1f} points</title></rect>"
        )
        x += w
    out.append(f'<text x="{min(x + 4, width - 30):.0f}" y="12" font-size="10">{total:.1f}</text></svg>')
    return "".join(out)


def waterfall(start: float, steps: list[tuple[str, float]], end: float, width: int = 460) -> str:
    """Previous score → one bar per pillar's change → current score."""
    labels = ["previous", *[n for n, _ in steps], "now"]
    levels, running = [], start
    for _, delta in steps:
        levels.append((running, running + delta))
        running += delta
    values = [start, end, *[v for pair in levels for v in pair]]
    lo, hi = min(0.0, min(values)), max(values) * 1.05 or 1.0
    height, top, bottom = 150, 10, 30
    y = lambda v: top + (height - top - bottom) * (hi - v) / (hi - lo)  # noqa: E731
    step = width / len(labels)
    out = [f'<svg width="{width}" height="{height}" role="img">']
    bars = [
        (0.0, start, "#888"),
        *[(a, b, "#c44e52" if b > a else "#5a9e4b") for a, b in levels],
        (0.0, end, "#1f3f66"),
    ]
    for i, ((a, b, colour), label) in enumerate(zip(bars, labels, strict=True)):
        x0 = i * step + 6
        top_y, bottom_y = y(max(a, b)), y(min(a, b))
        text = f"{b:.1f}" if i in (0, len(labels) - 1) else f"{b - a:+.1f}"
        centre, tall = x0 + (step - 12) / 2, max(bottom_y - top_y, 1)
        out.append(
            f'<rect x="{x0:.1f}" y="{top_y:.1f}" width="{step - 12:.1f}" height="{tall:.1f}" '
            f'fill="{colour}"><title>{_esc(label)}: {text}</title></rect>'
            f'<text x="{centre:.1f}" y="{top_y - 2:.1f}" {_SMALL}>{text}</text>'
            f'<text x="{centre:.1f}" y="{height - 12}" {_SMALL}>{_esc(label)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def zone_map(zones: pd.DataFrame) -> str:
    """One city's zones as SVG hexagons coloured by score, with a tooltip per zone."""
    from safetyml.batch.geo import cell_ring, svg_points

    points = svg_points([cell_ring(str(c)) for c in zones["h3"]], MAP_SIZE, 8)
    out = [f'<svg width="{MAP_SIZE}" height="{MAP_SIZE}" role="img">']
    for pts, row in zip(points, zones.itertuples(index=False), strict=True):
        tip = (
            f"{row.h3}: score {row.score:.1f} [{row.score_low:.1f}–{row.score_high:.1f}], rank {row.rank} "
            f"[{row.rank_low}–{row.rank_high}] of {row.units_ranked}, {row.trips:,} trips"
        )
        out.append(
            f'<polygon points="{pts}" fill="{score_colour(row.score)}" stroke="#fff" stroke-width="0.5">'
            f"<title>{_esc(tip)}</title></polygon>"
        )
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    cells = "".join(
        f'<rect x="{i * 3}" y="0" width="3" height="12" fill="{score_colour(i)}"/>' for i in range(101)
    )
    return (
        f'<svg width="320" height="28" role="img">{cells}<text x="0" y="24" font-size="10">0 safest</text>'
        '<text x="303" y="24" font-size="10" text-anchor="end">100 least safe</text></svg>'
    )


# ---------------------------------------------------------------------------------------------- context


def _pillars(index: pd.DataFrame) -> list[str]:
    return [c.removeprefix("pillar_") for c in index.columns if c.startswith("pillar_")]


def build_context(out: Path, config: IndexConfig) -> dict[str, Any]:
    """Everything the template shows, from the files of an index build folder."""
    index = pd.read_parquet(out / "index.parquet")
    indicators = pd.read_parquet(out / "indicators.parquet")
    sensitivity = pd.read_parquet(out / "sensitivity.parquet")
    imputation = pd.read_parquet(out / "imputation.parquet")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    pillar_of = {n: s.pillar for n, s in config.indicators.items()}
    pillars = _pillars(index)
    cities = index[index["level"] == "city"]
    latest = cities["period"].max()
    now = cities[cities["period"] == latest].sort_values("rank")
    city_ind = indicators[(indicators["level"] == "city") & (indicators["period"] == latest)]
    city_ind = city_ind.assign(pillar=city_ind["indicator"].map(pillar_of))
    by_pillar = city_ind.groupby(["city", "pillar"])[["contribution", "change_contribution"]].sum(min_count=1)
    ranked, breakdown, waterfalls = [], [], []
    for row in now.itertuples(index=False):
        parts = [(p, float(by_pillar["contribution"].get((row.city, p), 0.0))) for p in pillars]
        ranked.append(
            {
                "rank": int(row.rank),
                "city": row.city,
                "market": row.market,
                "score": row.score,
                "score_low": row.score_low,
                "score_high": row.score_high,
                "rank_low": int(row.rank_low),
                "rank_high": int(row.rank_high),
                "change": None if pd.isna(row.score_change) else float(row.score_change),
                "trips": int(row.trips),
                "bar": rank_bar(int(row.rank_low), int(row.rank_high), int(row.rank), int(row.units_ranked)),
                "imputed": row.imputed,
            }
        )
        breakdown.append(
            {
                "city": row.city,
                "bar": stacked_bar(parts, float(row.score)),
                "pillars": {p: getattr(row, f"pillar_{p}") for p in pillars},
            }
        )
        if not pd.isna(row.score_change):
            steps = [(p, float(by_pillar["change_contribution"].get((row.city, p), 0.0))) for p in pillars]
            waterfalls.append(
                {
                    "city": row.city,
                    "svg": waterfall(float(row.score - row.score_change), steps, float(row.score)),
                    "top": max(steps, key=lambda s: abs(s[1])),
                }
            )
    maps = []
    zones = (
        index[
            (index["level"] == "zone")
            & (index["period"] == index.loc[index["level"] == "zone", "period"].max())
        ]
        if (index["level"] == "zone").any()
        else index.iloc[0:0]
    )
    for city, group in zones.groupby("city", sort=True):
        maps.append(
            {
                "city": city,
                "svg": zone_map(group),
                "zones": len(group),
                "top": group.nsmallest(5, "rank").to_dict("records"),
            }
        )
    trend = cities.pivot_table(index="city", columns="period", values="score").sort_index()
    framework = [
        {
            "name": name,
            "pillar": spec.pillar,
            "direction": spec.direction,
            "unit": spec.unit,
            "description": spec.description,
            "weight": spec.weight,
            "levels": ", ".join(spec.levels),
            "status": manifest.get("not_available", {}).get(name, "used"),
        }
        for name, spec in config.indicators.items()
    ]
    return {
        "name": config.name,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "manifest": manifest,
        "period": pd.Timestamp(latest).strftime("%Y-%m"),
        "pillars": pillars,
        "pillar_colours": {p: PILLAR_COLOURS[i % len(PILLAR_COLOURS)] for i, p in enumerate(pillars)},
        "ranked": ranked,
        "breakdown": breakdown,
        "waterfalls": waterfalls,
        "maps": maps,
        "legend": legend(),
        "trend_periods": [pd.Timestamp(p).strftime("%Y-%m") for p in trend.columns],
        "trend": [{"city": c, "scores": list(r.values)} for c, r in trend.iterrows()],
        "sensitivity": sensitivity.to_dict("records"),
        "imputation": imputation[imputation["imputed"] > 0].to_dict("records"),
        "imputed_total": int(imputation["imputed"].sum()),
        "framework": framework,
        "method": config.method.model_dump(),
        "uncertainty": config.uncertainty.model_dump(),
        "pillar_weights": {p: s.weight for p, s in config.pillars.items()},
        "pillar_descriptions": {p: s.description for p, s in config.pillars.items()},
        "truth": manifest.get("truth"),
    }


def render(context: dict[str, Any]) -> str:
    from importlib.resources import files

    import jinja2

    source = files("safetyml.index").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = lambda v, d=1: (
        "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{d}f}"
    )
    env.filters["signed"] = lambda v, d=1: (
        "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):+.{d}f}"
    )
    return env.from_string(source).render(**context)


def write_report(out: Path, path: Path | None = None, config: IndexConfig | None = None) -> Path:
    """Render the report of the build folder ``out`` to ``path`` (default ``out/report.html``)."""
    out = Path(out)
    if not (out / "index.parquet").exists():
        from safetyml.index.config import IndexDataError

        raise IndexDataError(
            f"{out} holds no index.parquet; run `safetyml index build --data DIR --out {out}` first"
        )
    if config is None:
        source = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("config")
        config = load_config(Path(source) if source and Path(source).exists() else None)
    path = Path(path) if path is not None else out / "report.html"
    path.write_text(render(build_context(out, config)), encoding="utf-8")
    return path
