"""Evaluation plots (ROC, precision–recall, calibration, lift) as PNG files, drawn with matplotlib (Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from safetyml.training.metrics import equal_count_bins, lift_by_decile


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_plots(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    out_dir: Path,
    title: str,
    n_bins: int = 10,
) -> list[Path]:
    """Write roc.png, pr.png, calibration.png and lift.png comparing the named score vectors."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y, dtype="float64")
    written = []

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax.legend(loc="lower right")
    written.append(_save(fig, out_dir / "roc.png", plt))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        precision, recall, _ = precision_recall_curve(y, s)
        ax.plot(recall, precision, label=name)
    ax.axhline(y.mean(), color="k", ls=":", lw=1, label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title=f"{title}: precision–recall")
    ax.legend(loc="upper right")
    written.append(_save(fig, out_dir / "pr.png", plt))

    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, s in scores.items():
        bins = equal_count_bins(s, n_bins)
        mean_p = [float(np.mean(s[b])) for b in bins]
        rate = [float(y[b].mean()) for b in bins]
        top = max(top, *mean_p, *rate)
        ax.plot(mean_p, rate, "o-", label=name)
    ax.plot([0, top], [0, top], "k:", lw=1, label="perfect")
    ax.set(
        xlabel="mean predicted probability (equal-count bins)",
        ylabel="observed rate",
        title=f"{title}: calibration",
    )
    ax.legend(loc="upper left")
    written.append(_save(fig, out_dir / "calibration.png", plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(scores), 1)
    for i, (name, s) in enumerate(scores.items()):
        lift = lift_by_decile(y, s, n_bins)
        ax.bar(lift["decile"] + (i - (len(scores) - 1) / 2) * width, lift["lift"], width=width, label=name)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(
        xlabel="decile (1 = highest scores)", ylabel="lift over base rate", title=f"{title}: lift by decile"
    )
    ax.legend()
    written.append(_save(fig, out_dir / "lift.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
