"""Global and cohort views of SHAP values: importance ranking, dependence, cohort comparison with CIs.

All functions take contributions already computed (``explain_logodds``) so one TreeSHAP pass feeds every
view. Importance is the mean absolute contribution in log-odds of a feature *group* (windows of one
source summed first, as in reason codes). Cohort comparisons come with seeded bootstrap confidence
intervals so an analyst can tell a real difference between cities from noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CI_LEVEL = 0.95


def grouped_contributions(
    contributions: np.ndarray, features: list[str], group_of: dict[str, str]
) -> pd.DataFrame:
    """Per-row contributions summed within feature groups: (n, n_groups), groups in first-seen order."""
    p = len(features)
    phi = np.atleast_2d(contributions)[:, :p]
    groups = list(dict.fromkeys(group_of.get(f, f) for f in features))
    onehot = np.zeros((p, len(groups)))
    index = {g: i for i, g in enumerate(groups)}
    for j, name in enumerate(features):
        onehot[j, index[group_of.get(name, name)]] = 1.0
    return pd.DataFrame(phi @ onehot, columns=groups)


def global_importance(contributions: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per column (feature or group), ranked: mean_abs, mean (signed), share of total, rank."""
    values = contributions.to_numpy(dtype="float64")
    mean_abs = np.abs(values).mean(axis=0)
    total = mean_abs.sum()
    out = pd.DataFrame(
        {
            "name": contributions.columns.astype(str),
            "mean_abs": mean_abs,
            "mean": values.mean(axis=0),
            "share": mean_abs / total if total > 0 else np.zeros_like(mean_abs),
        }
    )
    out = out.sort_values("mean_abs", ascending=False, kind="stable", ignore_index=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def dependence(
    values: pd.Series, shap_values: np.ndarray, bins: int = 10, max_levels: int = 12
) -> pd.DataFrame:
    """Binned dependence of one feature: per value bin, rows, range, mean SHAP (log-odds) and its spread.

    Numeric features use quantile bins (ties merged); categorical ones one bin per level (most frequent
    ``max_levels``); missing values get their own bin, since LightGBM routes them on their own.
    """
    shap_values = np.asarray(shap_values, dtype="float64")
    frame = pd.DataFrame({"shap": shap_values})
    is_numeric = pd.api.types.is_numeric_dtype(values.dtype) and not isinstance(
        values.dtype, pd.CategoricalDtype
    )
    rows = []
    if is_numeric:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(x)
        distinct = np.unique(x[present])
        if 0 < len(distinct) <= max(bins, 2):  # flags, hours, small counts: one bin per value
            for level in distinct:
                hit = present & (x == level)
                rows.append(
                    (_num(level), float(level), float(level), int(hit.sum()), float(level), shap_values[hit])
                )
        elif present.any():
            edges = np.unique(np.quantile(x[present], np.linspace(0, 1, bins + 1)))
            if len(edges) == 1:
                edges = np.array([edges[0], edges[0]])
            which = np.clip(np.searchsorted(edges, x[present], side="right") - 1, 0, len(edges) - 2)
            shap_present = shap_values[present]
            for b in range(len(edges) - 1):
                hit = which == b
                if hit.any():
                    s = shap_present[hit]
                    rows.append(
                        (
                            f"[{_num(edges[b])}, {_num(edges[b + 1])}]",
                            float(edges[b]),
                            float(edges[b + 1]),
                            int(hit.sum()),
                            float(x[present][hit].mean()),
                            s,
                        )
                    )
        if (~present).any():
            rows.append(("missing", np.nan, np.nan, int((~present).sum()), np.nan, shap_values[~present]))
    else:
        labels = values.astype("object").where(values.notna(), "missing").astype(str).to_numpy()
        frame["level"] = labels
        top = frame["level"].value_counts().index[:max_levels]
        for level in top:
            s = shap_values[labels == level]
            rows.append((str(level), np.nan, np.nan, len(s), np.nan, s))
    return pd.DataFrame(
        [
            {
                "bin": label,
                "low": low,
                "high": high,
                "rows": count,
                "mean_value": mean_value,
                "mean_shap": float(s.mean()),
                "p10_shap": float(np.quantile(s, 0.1)),
                "p90_shap": float(np.quantile(s, 0.9)),
            }
            for label, low, high, count, mean_value, s in rows
        ]
    )


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.3g}"


def score_bands(probability: np.ndarray) -> np.ndarray:
    """Score band of each row by its rank in the explained population: bottom 50%, 50–90%, 90–99%, top 1%."""
    p = np.asarray(probability, dtype="float64")
    cuts = np.quantile(p, [0.5, 0.9, 0.99]) if len(p) else np.zeros(3)
    labels = np.array(["1: bottom 50%", "2: 50–90%", "3: 90–99%", "4: top 1%"], dtype=object)
    return labels[np.searchsorted(cuts, p, side="right")]


@dataclass
class CohortImportance:
    """Mean |SHAP| per group per cohort with bootstrap CIs; ``draws[cohort]`` is (n_boot, n_groups)."""

    table: pd.DataFrame  # cohort, group, rows, mean_abs, ci_low, ci_high
    draws: dict[str, np.ndarray]
    groups: list[str]
    level: float

    def compare(self, group: str, a: str, b: str) -> CohortComparison:
        """Does ``group`` drive scores more in cohort ``a`` than in ``b``? With the gap's bootstrap CI."""
        j = self.groups.index(group)
        ta = self.table[(self.table.cohort == a) & (self.table.group == group)].iloc[0]
        tb = self.table[(self.table.cohort == b) & (self.table.group == group)].iloc[0]
        diff = self.draws[a][:, j] - self.draws[b][:, j]  # independent resamples of disjoint cohorts
        alpha = (1 - self.level) / 2
        lo, hi = np.quantile(diff, [alpha, 1 - alpha])
        return CohortComparison(
            group=group,
            a=a,
            b=b,
            mean_a=float(ta.mean_abs),
            ci_a=(float(ta.ci_low), float(ta.ci_high)),
            mean_b=float(tb.mean_abs),
            ci_b=(float(tb.ci_low), float(tb.ci_high)),
            difference=float(ta.mean_abs - tb.mean_abs),
            difference_ci=(float(lo), float(hi)),
            level=self.level,
        )

    def notable(self, groups: list[str] | None = None) -> list[CohortComparison]:
        """Per group: the cohort where it drives scores most against the one where it drives them least."""
        out = []
        for group in groups or self.groups:
            rows = self.table[self.table.group == group]
            if len(rows) < 2:
                continue
            hi = rows.loc[rows.mean_abs.idxmax(), "cohort"]
            lo = rows.loc[rows.mean_abs.idxmin(), "cohort"]
            out.append(self.compare(group, hi, lo))
        return out


@dataclass
class CohortComparison:
    group: str
    a: str
    b: str
    mean_a: float
    ci_a: tuple[float, float]
    mean_b: float
    ci_b: tuple[float, float]
    difference: float
    difference_ci: tuple[float, float]
    level: float

    @property
    def intervals_overlap(self) -> bool:
        return self.ci_a[0] <= self.ci_b[1] and self.ci_b[0] <= self.ci_a[1]

    @property
    def significant(self) -> bool:
        """The bootstrap CI of the difference excludes zero."""
        return self.difference_ci[0] > 0 or self.difference_ci[1] < 0

    def sentence(self) -> str:
        more = "more" if self.difference > 0 else "less"
        pct = round(100 * self.level)
        verdict = (
            f"the {pct}% intervals do not overlap: unlikely to be noise"
            if not self.intervals_overlap
            else f"the difference's {pct}% interval excludes zero, though the intervals overlap"
            if self.significant
            else f"the {pct}% intervals overlap and the difference could be noise"
        )
        return (
            f"In {self.a}, {self.group} drives scores {more} than in {self.b} "
            f"(mean |SHAP| {self.mean_a:.3f} [{self.ci_a[0]:.3f}, {self.ci_a[1]:.3f}] vs "
            f"{self.mean_b:.3f} [{self.ci_b[0]:.3f}, {self.ci_b[1]:.3f}] log-odds); {verdict}."
        )


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 25) -> np.ndarray:
    """Bootstrap distribution of column means: (n_boot, n_cols), resampling rows with replacement.

    Resampling is done as multinomial row counts times the matrix, chunked to bound memory.
    """
    values = np.asarray(values, dtype="float64")
    n = len(values)
    out = np.empty((n_boot, values.shape[1]))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype("float64")
        out[start : start + b] = counts @ values / n
    return out


def cohort_importance(
    grouped: pd.DataFrame,
    cohorts: np.ndarray | pd.Series,
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = CI_LEVEL,
    min_rows: int = 30,
) -> CohortImportance:
    """Mean |SHAP| per group within each cohort, with percentile bootstrap CIs (seeded).

    Cohorts with fewer than ``min_rows`` rows are left out: their intervals would say nothing.
    """
    labels = pd.Series(np.asarray(cohorts, dtype=object)).fillna("unknown").astype(str).to_numpy()
    abs_values = np.abs(grouped.to_numpy(dtype="float64"))
    groups = [str(g) for g in grouped.columns]
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    records, draws = [], {}
    for cohort in sorted(set(labels)):
        rows = abs_values[labels == cohort]
        if len(rows) < min_rows:
            continue
        boot = bootstrap_means(rows, n_boot, rng)
        draws[cohort] = boot
        lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=0)
        mean = rows.mean(axis=0)
        for j, group in enumerate(groups):
            records.append(
                {
                    "cohort": cohort,
                    "group": group,
                    "rows": len(rows),
                    "mean_abs": float(mean[j]),
                    "ci_low": float(lo[j]),
                    "ci_high": float(hi[j]),
                }
            )
    table = pd.DataFrame(records, columns=["cohort", "group", "rows", "mean_abs", "ci_low", "ci_high"])
    return CohortImportance(table=table, draws=draws, groups=groups, level=level)
