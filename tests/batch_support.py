"""Seeded stand-ins for the batch unit tests: a synthetic features frame, a real LightGBM model, a scorer."""

from __future__ import annotations

from dataclasses import dataclass

import h3
import lightgbm as lgb
import numpy as np
import pandas as pd

from safetyml.calibration import Calibrator, sigmoid
from safetyml.model import RiskModel

FEATURES = ["rider_incidents_30d", "rider_incidents_90d", "zone_rate", "distance_km", "vehicle_type"]
GROUPS = {"rider_incidents_30d": "rider_incidents", "rider_incidents_90d": "rider_incidents"}
VEHICLES = ["motorcycle", "bicycle", "car"]
CENTRES = {"sao_paulo": (-23.5505, -46.6333), "mexico_city": (19.4326, -99.1332)}


@dataclass
class StubDefinition:
    name: str
    group: str

    def describe(self, value: object) -> str:
        return f"{self.name.replace('_', ' ')} is {value}"


class StubFeatureSet:
    def get(self, name: str) -> StubDefinition:
        return StubDefinition(name, GROUPS.get(name, name))


def synthetic_frame(n: int, seed: int = 0, start: str = "2026-09-01") -> pd.DataFrame:
    """A features-built incident frame: keys, label and five features (one categorical, some missing)."""
    rng = np.random.default_rng(seed)
    city = rng.choice(list(CENTRES), n)
    cells = {c: sorted(h3.grid_disk(h3.latlng_to_cell(*CENTRES[c], 8), 3)) for c in CENTRES}
    pick = np.array([cells[c][i] for c, i in zip(city, rng.integers(0, 37, n), strict=True)], dtype=object)
    drop = np.array([cells[c][i] for c, i in zip(city, rng.integers(0, 37, n), strict=True)], dtype=object)
    drop[rng.random(n) < 0.02] = None
    r30 = rng.poisson(0.3, n).astype(float)
    r90 = r30 + rng.poisson(0.6, n)
    zone = rng.gamma(2.0, 2.0, n)
    dist = rng.lognormal(1.0, 0.5, n)
    vehicle = rng.choice(VEHICLES, n).astype(object)
    vehicle[rng.random(n) < 0.01] = None
    zone[rng.random(n) < 0.03] = np.nan
    logit = (
        -3.5
        + 0.8 * r30
        + 0.2 * r90
        + 0.15 * np.nan_to_num(zone, nan=4.0)
        + 0.1 * dist
        + 0.5 * (vehicle == "motorcycle")
    )
    label = (rng.random(n) < sigmoid(logit)).astype("int64")
    as_of = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86_400, n)), unit="s")
    return pd.DataFrame(
        {
            "trip_id": pd.array([f"T{i:08d}" for i in range(n)], dtype="str"),
            "rider_id": pd.array([f"R{i:05d}" for i in rng.integers(0, 500, n)], dtype="str"),
            "merchant_id": pd.array([f"M{i:05d}" for i in rng.integers(0, 200, n)], dtype="str"),
            "city": pd.array(city, dtype="str"),
            "pickup_h3": pd.array(pick, dtype="str"),
            "dropoff_h3": pd.array(drop, dtype="str"),
            "as_of": as_of.astype("datetime64[ns, UTC]"),
            "label": label,
            "rider_incidents_30d": r30,
            "rider_incidents_90d": r90,
            "zone_rate": zone,
            "distance_km": dist,
            "vehicle_type": pd.array(vehicle, dtype="str"),
        }
    )


def trained_model(frame: pd.DataFrame, seed: int = 0) -> RiskModel:
    """A small real LightGBM incident model with Platt calibration."""
    model = RiskModel(
        task="incident_risk",
        booster=None,
        features=list(FEATURES),
        categories={"vehicle_type": list(VEHICLES)},
    )
    X = model.prepare(frame)
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 15,
            "learning_rate": 0.1,
            "verbose": -1,
            "seed": seed,
            "deterministic": True,
            "num_threads": 1,
        },
        lgb.Dataset(X, frame["label"], categorical_feature=["vehicle_type"]),
        num_boost_round=40,
    )
    model.booster = booster
    model.calibrator = Calibrator(method="platt", a=0.9, b=-0.1)
    return model


def make_scorer(model: RiskModel):
    from safetyml.scoring.policies import load_policies
    from safetyml.scoring.scorer import Scorer

    return Scorer(
        models={model.task: model},
        policies=load_policies(),
        feature_set=StubFeatureSet(),
        model_versions={model.task: "7"},
    )
