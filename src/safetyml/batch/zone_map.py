"""A self-contained HTML zone risk map: H3 hexes drawn as inline SVG, coloured by risk, with tooltips.

Written by hand rather than with folium/leaflet because those fetch their JavaScript and tiles from the
network; here every hexagon is an SVG polygon in the file (own equirectangular projection per city),
so the map opens offline. One panel per (city, time band), switched with a drop-down; flagged hotspots
have a thick outline; hovering a hex shows its figures and main drivers (also as a native SVG title).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import h3
import numpy as np
import pandas as pd

from safetyml.batch.geo import svg_points
from safetyml.values import is_missing

SIZE = 720  # px, square drawing area of each panel
MARGIN = 16
# Colour stops for the risk ratio (zone risk / city-band average) on a log scale: blue → pale → red.
RATIO_STOPS: tuple[tuple[float, str], ...] = (
    (0.5, "#2c7bb6"),
    (0.8, "#abd9e9"),
    (1.0, "#ffffbf"),
    (1.5, "#fdae61"),
    (2.5, "#d7191c"),
    (4.0, "#67000d"),
)


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


def ratio_colour(ratio: float) -> str:
    """Fill colour of a zone from its risk ratio, interpolated on a log scale between RATIO_STOPS."""
    if ratio is None or not np.isfinite(ratio) or ratio <= 0:
        return "#cccccc"
    x = math.log(ratio)
    logs = [math.log(s) for s, _ in RATIO_STOPS]
    if x <= logs[0]:
        return RATIO_STOPS[0][1]
    if x >= logs[-1]:
        return RATIO_STOPS[-1][1]
    i = int(np.searchsorted(logs, x, side="right")) - 1
    t = (x - logs[i]) / (logs[i + 1] - logs[i])
    a, b = _hex_to_rgb(RATIO_STOPS[i][1]), _hex_to_rgb(RATIO_STOPS[i + 1][1])
    r, g, bl = (round(a[j] + t * (b[j] - a[j])) for j in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def _drivers_text(drivers: object) -> str:
    if is_missing(drivers):
        return ""
    if isinstance(drivers, str):
        return drivers
    items = list(drivers)  # list of dicts (from the zone table) or numpy array of dicts (from Parquet)
    return "; ".join(str(d.get("description") or d.get("group")) for d in items if isinstance(d, dict))


def _corrected(row: object) -> str:
    """The delay-corrected count and interval, in brackets, when the zone table has them (else "")."""
    get = row.get if isinstance(row, pd.Series) else lambda key, default=None: getattr(row, key, default)
    corrected = get("observed_corrected", None)
    if corrected is None or not np.isfinite(corrected):
        return ""
    return (
        f" (delay-corrected {corrected:.1f} [{get('observed_corrected_low', 0):.0f}–"
        f"{get('observed_corrected_high', 0):.0f}])"
    )


def _tooltip(row: pd.Series) -> str:
    lines = [
        f"{row['h3']} · {row['city']} · {row['band']}",
        f"tier: {row['tier']}{'  ⚑ HOTSPOT' if bool(row['flagged']) else ''}",
        f"risk multiplier vs city: {row['risk_ratio']:.2f}×",
        f"window: {int(row['trips']):,} trips, expected incidents {row['expected_incidents']:.2f} "
        f"(mean risk {row['expected_rate']:.2%}), observed {int(row['observed_incidents'])}{_corrected(row)}",
        f"evidence: {int(row['evidence_trips']):,} trips, {int(row['evidence_incidents'])} incidents "
        f"vs {row['evidence_expected']:.1f} expected (q = {row['own_q']:.3g})",
        f"Gi* z = {row['gi_z']:.2f}, FDR q = {row['gi_q']:.3g}",
    ]
    drivers = _drivers_text(row.get("drivers"))
    if drivers:
        lines.append(f"drivers: {drivers}")
    return "\n".join(lines)


def _panel_svg(panel: pd.DataFrame) -> str:
    """One SVG of a (city, band) panel's hexes, projected around their mean latitude."""
    rings = [[(lng, lat) for lat, lng in h3.cell_to_boundary(str(c))] for c in panel["h3"]]
    points = svg_points(rings, SIZE, MARGIN)
    parts = [f'<svg viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}" role="img">']
    order = np.argsort(panel["flagged"].to_numpy().astype(bool), kind="stable")  # flagged drawn last (on top)
    for i in order:
        row = panel.iloc[i]
        pts = points[i]
        flagged = bool(row["flagged"])
        cls = "hex flagged" if flagged else "hex"
        parts.append(
            f'<polygon class="{cls}" points="{pts}" fill="{ratio_colour(float(row["risk_ratio"]))}" '
            f'data-h3="{html.escape(str(row["h3"]))}"><title>{html.escape(_tooltip(row))}</title></polygon>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend_svg() -> str:
    width, height = 360, 44
    lo, hi = math.log(RATIO_STOPS[0][0]), math.log(RATIO_STOPS[-1][0])
    cells = []
    for j in range(72):
        ratio = math.exp(lo + (hi - lo) * (j + 0.5) / 72)
        cells.append(f'<rect x="{j * 5}" y="0" width="5" height="16" fill="{ratio_colour(ratio)}"/>')
    ticks = []
    for value, _ in RATIO_STOPS:
        x = (math.log(value) - lo) / (hi - lo) * width
        ticks.append(
            f'<text x="{min(max(x, 8), width - 8):.0f}" y="32" text-anchor="middle">{value:g}×</text>'
        )
    return f'<svg width="{width}" height="{height}" class="legend">{"".join(cells)}{"".join(ticks)}</svg>'


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#222}
.panel{display:none}.panel.on{display:block}
polygon.hex{stroke:#ffffff;stroke-width:0.6}
polygon.hex.flagged{stroke:#000;stroke-width:2.4}
polygon.hex:hover{stroke:#333;stroke-width:2}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:6px 8px;
 font-size:12px;white-space:pre;display:none;box-shadow:0 2px 6px rgba(0,0,0,.2)}
table{border-collapse:collapse;font-size:13px;margin-top:12px}
td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
.legend text{font-size:11px}
"""

_SCRIPT = """
const sel=document.getElementById('panel');const tip=document.getElementById('tip');
function show(){document.querySelectorAll('.panel').forEach(p=>p.classList.toggle('on',p.id===sel.value));}
sel.addEventListener('change',show);show();
document.querySelectorAll('polygon.hex').forEach(h=>{
 const t=h.querySelector('title').textContent;
 h.addEventListener('mousemove',e=>{tip.textContent=t;tip.style.display='block';
  tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';});
 h.addEventListener('mouseleave',()=>{tip.style.display='none';});});
"""


def render_zone_map(zones: pd.DataFrame, title: str = "Zone risk map", subtitle: str = "") -> str:
    """The whole HTML page for a zone table (one row per city × band × h3), with no external resources."""
    needed = [
        "city",
        "band",
        "h3",
        "trips",
        "expected_incidents",
        "expected_rate",
        "observed_incidents",
        "evidence_trips",
        "evidence_incidents",
        "evidence_expected",
        "risk_ratio",
        "tier",
        "flagged",
        "gi_z",
        "gi_q",
        "own_q",
    ]
    missing = [c for c in needed if c not in zones.columns]
    if missing:
        raise KeyError(f"render_zone_map: the zone table lacks column(s) {', '.join(missing)}")
    options, panels = [], []
    for (city, band), panel in zones.groupby(["city", "band"], sort=True):
        pid = html.escape(f"p-{city}-{band}")
        flagged = int(panel["flagged"].sum())
        options.append(
            f'<option value="{pid}">{html.escape(str(city))} · {html.escape(str(band))} '
            f"({flagged} hotspot{'s' if flagged != 1 else ''})</option>"
        )
        rows = panel[panel["flagged"].astype(bool)].sort_values("risk_ratio", ascending=False)
        table = "".join(
            f"<tr><td>{html.escape(str(r.h3))}</td><td>{html.escape(str(r.tier))}</td><td>{r.risk_ratio:.2f}</td>"
            f"<td>{int(r.trips):,}</td><td>{r.expected_incidents:.1f}</td><td>{int(r.observed_incidents)}{_corrected(r)}</td>"
            f"<td>{int(r.evidence_incidents)} / {r.evidence_expected:.1f}</td><td>{r.gi_z:.2f}</td>"
            f"<td>{html.escape(_drivers_text(r.drivers) if 'drivers' in rows else '')}</td></tr>"
            for r in rows.itertuples()
        )
        panels.append(
            f'<div class="panel" id="{pid}">{_panel_svg(panel.reset_index(drop=True))}'
            f"<h3>Hotspots: {html.escape(str(city))}, {html.escape(str(band))}</h3>"
            "<table><tr><th>zone</th><th>tier</th><th>risk multiplier</th><th>trips (window)</th>"
            "<th>expected (window)</th><th>observed (window; delay-corrected)</th>"
            "<th>evidence incidents / expected</th>"
            f"<th>Gi* z</th><th>main drivers</th></tr>{table}</table></div>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>"
        f'<label>City and time band: <select id="panel">{"".join(options)}</select></label>'
        "<p>Colour: the zone's risk multiplier — incidents per trip touching it ÷ the city-band rate, "
        "over the evidence period, each incident shared between the two ends of its trip. "
        "Thick black outline: hotspot (its own incidents significantly above expectation after FDR, "
        "and tier high or above). "
        "Hover a hex for its figures and the main drivers of its trips' predicted risk.</p>"
        f'{_legend_svg()}{"".join(panels)}<div id="tip"></div><script>{_SCRIPT}</script></body></html>'
    )


def write_zone_map(zones: pd.DataFrame, path: Path, title: str = "Zone risk map", subtitle: str = "") -> Path:
    """Write the HTML map to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_zone_map(zones, title, subtitle), encoding="utf-8")
    return path
