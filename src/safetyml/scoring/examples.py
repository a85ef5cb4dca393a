"""Example scoring requests built from the online store, for the docs, the demo and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml.scoring.scorer import store_as_of, utc_now
from safetyml.values import optional_text

if TYPE_CHECKING:
    from safetyml.features.online import OnlineStore


def store_ids(store: OnlineStore, entity: str, n: int = 1, seed: int = 0) -> list[str]:
    """Up to ``n`` ids of an entity in the online store (a seeded sample), for examples and benchmarks."""
    ids = store.ids(entity)
    if len(ids) <= n:
        return ids
    picks = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(picks)]


def example_trip_requests(store: OnlineStore, n: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Realistic trip requests for real riders and merchants of the store, near the merchant's city."""
    from safetyml import cities

    rng = np.random.default_rng(seed)
    riders = store_ids(store, "rider", n, seed) or ["R_UNKNOWN"]
    merchants = store_ids(store, "merchant", n, seed + 1) or ["M_UNKNOWN"]
    as_of = store_as_of(store) or utc_now()
    methods, weights = ["card", "cash", "wallet", "voucher"], [0.55, 0.25, 0.15, 0.05]
    out = []
    for i in range(n):
        merchant = merchants[i % len(merchants)]
        row = store.get_one("merchant", merchant) if merchants != ["M_UNKNOWN"] else None
        city_id = optional_text((row or {}).get("city")) or next(iter(cities.registry()))
        city = cities.get(city_id)
        lat, lng = city.lat + rng.normal(0, 0.03), city.lng + rng.normal(0, 0.03)
        dlat, dlng = rng.normal(0, 0.02, size=2)
        out.append(
            {
                "rider_id": riders[i % len(riders)],
                "merchant_id": merchant,
                "requested_at": (
                    pd.Timestamp(as_of) + pd.Timedelta(minutes=int(rng.integers(0, 600)))
                ).isoformat(),
                "pickup_lat": round(float(lat), 6),
                "pickup_lng": round(float(lng), 6),
                "dropoff_lat": round(float(lat + dlat), 6),
                "dropoff_lng": round(float(lng + dlng), 6),
                "distance_km": round(float(np.hypot(dlat, dlng) * 111 * 1.3), 2),
                "order_value": round(float(rng.lognormal(3.4, 0.6)), 2),
                "payment_method": str(rng.choice(methods, p=weights)),
                "rain": bool(rng.random() < 0.2),
            }
        )
    return out


def example_curl(
    port: int = 3000,
    token_env: str = "SAFETYML_API_TOKEN",
    host: str = "127.0.0.1",
    store_path: Path | None = None,
) -> str:
    """A ready-to-paste ``curl`` scoring a real rider and merchant of the online store (for the demo)."""
    import json
    import shlex

    from safetyml.features.online import OnlineStore

    store = OnlineStore.open(store_path)
    try:
        payload = example_trip_requests(store, 1)[0]
    finally:
        store.close()
    body = shlex.quote(json.dumps(payload))
    return (
        f"curl -s -X POST http://{host}:{port}/score_trip \\\n"
        f"  -H 'Content-Type: application/json' \\\n"
        f'  -H "Authorization: Bearer ${token_env}" \\\n'
        f"  -d {body}"
    )
