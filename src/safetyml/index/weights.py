"""Weights: equal, expert (from the YAML) or data-driven, as one vector per pillar and across pillars.

The data-driven option is **PCA within each pillar**: an indicator's weight is its squared loading on
the pillar's first principal component (of the correlation matrix of its normalised values), the OECD
Handbook's factor-analysis weighting. It rewards indicators that share the pillar's common signal and
discounts one that moves on its own (noise, or a different phenomenon); pillar weights stay the expert
ones, because pillars are policy choices. scikit-learn's PCA gives the loadings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safetyml.index.config import IndexConfig


@dataclass
class Weights:
    """``within[i]``: weight of indicator i inside its pillar; ``pillar[p]``: weight of pillar p."""

    method: str
    pillars: list[str]
    members: list[np.ndarray]  # indicator positions of each pillar
    within: np.ndarray  # (I,)
    pillar: np.ndarray  # (P,)

    def perturbed(self, noise: float, draws: int, rng: np.random.Generator) -> Weights:
        """``draws`` noisy copies (one row each): every weight times U(1 − noise, 1 + noise), then
        renormalised within each pillar and across pillars (COINr's ``noisy_weights``)."""
        within = self.within * rng.uniform(1 - noise, 1 + noise, (draws, len(self.within)))
        for idx in self.members:
            within[:, idx] /= within[:, idx].sum(axis=1, keepdims=True)
        pillar = self.pillar * rng.uniform(1 - noise, 1 + noise, (draws, len(self.pillar)))
        pillar /= pillar.sum(axis=1, keepdims=True)
        return Weights(self.method, self.pillars, self.members, within, pillar)

    @property
    def overall(self) -> np.ndarray:
        """Each indicator's effective weight in the index (sums to 1)."""
        out = np.zeros_like(self.within)
        for p, idx in enumerate(self.members):
            out[idx] = self.within[idx] * self.pillar[p]
        return out


def structure(config: IndexConfig, indicators: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """The pillars that have at least one available indicator, and their indicator positions."""
    pillars, members = [], []
    for pillar in config.pillars:
        idx = np.array(
            [i for i, n in enumerate(indicators) if config.indicators[n].pillar == pillar], dtype=int
        )
        if len(idx):
            pillars.append(pillar)
            members.append(idx)
    return pillars, members


def _pca_within(values: np.ndarray) -> np.ndarray:
    """Squared first-component loadings of standardised columns (equal when fewer than 2 columns vary)."""
    from sklearn.decomposition import PCA

    k = values.shape[1]
    rows = values[~np.isnan(values).any(axis=1)]
    std = rows.std(axis=0)
    varying = std > 0
    if k == 1 or varying.sum() < 2 or len(rows) < 3:
        return np.full(k, 1.0 / k)
    z = (rows[:, varying] - rows[:, varying].mean(axis=0)) / std[varying]
    loading = PCA(n_components=1).fit(z).components_[0]
    out = np.zeros(k)
    out[varying] = loading**2
    return out / out.sum()


def make_weights(config: IndexConfig, indicators: list[str], method: str, normalised: np.ndarray) -> Weights:
    """Weights for ``indicators`` (the available ones) by ``method``; expert weights are renormalised
    over the available indicators of a pillar, and pillar weights over the pillars left."""
    pillars, members = structure(config, indicators)
    within = np.zeros(len(indicators))
    for idx in members:
        if method == "equal":
            within[idx] = 1.0 / len(idx)
        elif method == "expert":
            given = np.array([config.indicators[indicators[i]].weight for i in idx], dtype=object)
            raw = np.array([1.0 if w is None else float(w) for w in given])
            within[idx] = raw / raw.sum() if raw.sum() > 0 else 1.0 / len(idx)
        elif method == "pca":
            within[idx] = _pca_within(normalised[:, idx])
        else:
            raise ValueError(f"unknown weighting {method!r}; expected equal, expert or pca")
    if method == "equal":
        pillar = np.full(len(pillars), 1.0 / len(pillars))
    else:
        pillar = np.array([config.pillars[p].weight for p in pillars])
        pillar = pillar / pillar.sum() if pillar.sum() > 0 else np.full(len(pillars), 1.0 / len(pillars))
    return Weights(method, pillars, members, within, pillar)
