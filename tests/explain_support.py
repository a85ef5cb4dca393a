"""Small seeded stand-ins for the explanation unit tests: a synthetic frame, feature set and real model.

The CLI and report tests use the real pipeline (simulator, features, training); these keep the core's
tests fast and independent of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from safetyml.calibration import Calibrator, sigmoid
from safetyml.model import RiskModel

CITIES = ("rio", "sao_paulo", "recife")
VEHICLES = ("motorcycle", "bicycle", "car")


@dataclass
class StubFeature:
    """The attributes of a FeatureDefinition that explanations use."""

    name: str
    group: str
    description: str
    entity: str = "trip"
    kind: str = "numeric"
    categories: list[str] | None = None
    direction: str = "up"

    def describe(self, value: object) -> str:
        return self.description.format(value=value)


@dataclass
class StubFeatureSet:
    features: list[StubFeature] = field(default_factory=list)

    def get(self, name: str) -> StubFeature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def for_task(self, task: str) -> list[StubFeature]:
        return list(self.features)


def feature_set() -> StubFeatureSet:
    return StubFeatureSet(
        [
            StubFeature("rider_incidents_7d", "rider_incidents", "{value} incidents by this rider in 7 days"),
            StubFeature(
                "rider_incidents_30d", "rider_incidents", "{value} incidents by this rider in 30 days"
            ),
            StubFeature(
                "zone_night_risk", "zone_night_risk", "night-time risk of the pickup zone is {value}"
            ),
            StubFeature("order_value", "order_value", "order worth {value}"),
            StubFeature("distance_km", "distance_km", "trip of {value} km"),
            StubFeature(
                "vehicle_type",
                "vehicle_type",
                "rider travels by {value}",
                kind="categorical",
                categories=list(VEHICLES),
            ),
        ]
    )


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """Trips with a known risk: incidents, night-zone risk (stronger in Rio) and motorcycles push it up."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, n)
    inc30 = rng.poisson(0.8, n).astype("float64")
    inc7 = np.minimum(inc30, rng.poisson(0.3, n)).astype("float64")
    zone = rng.uniform(0, 1, n)
    zone[city == "rio"] *= 2.0
    value = rng.gamma(2.0, 30.0, n)
    dist = rng.uniform(0.5, 12, n)
    dist[rng.uniform(size=n) < 0.05] = np.nan
    vehicle = rng.choice(VEHICLES, n)
    logit = -3.0 + 0.6 * inc30 + 0.5 * inc7 + 1.5 * zone + 0.08 * dist + 0.7 * (vehicle == "motorcycle")
    label = (rng.uniform(size=n) < sigmoid(logit)).astype(int)
    return pd.DataFrame(
        {
            "trip_id": [f"t{seed}_{i}" for i in range(n)],
            "city": pd.array(city, dtype="str"),
            "rider_incidents_7d": inc7,
            "rider_incidents_30d": inc30,
            "zone_night_risk": zone,
            "order_value": value,
            "distance_km": dist,
            "vehicle_type": pd.array(vehicle, dtype="str"),
            "label": label,
        }
    )


FEATURES = [
    "rider_incidents_7d",
    "rider_incidents_30d",
    "zone_night_risk",
    "order_value",
    "distance_km",
    "vehicle_type",
]


def train_model(
    frame: pd.DataFrame,
    *,
    categorical: bool = True,
    calibration: str = "isotonic",
    rounds: int = 60,
    seed: int = 0,
) -> RiskModel:
    """A real LightGBM model with a calibrator fitted on a held-out half."""
    features = FEATURES if categorical else [f for f in FEATURES if f != "vehicle_type"]
    model = RiskModel(
        task="incident_risk",
        booster=None,
        features=features,
        categories={"vehicle_type": list(VEHICLES)} if categorical else {},
    )
    half = len(frame) // 2
    train, valid = frame.iloc[:half], frame.iloc[half:]
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
        "deterministic": True,
    }
    data = lgb.Dataset(model.prepare(train), label=train["label"].to_numpy())
    model.booster = lgb.train(params, data, num_boost_round=rounds)
    model.calibrator = Calibrator.fit(
        calibration, model.predict_uncalibrated(valid), valid["label"].to_numpy()
    )
    model.metadata = {"train_start": "2026-01-01", "train_end": "2026-03-31", "metrics": {"test_auc": 0.7}}
    return model
