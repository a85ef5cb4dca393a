"""Point-in-time features: definitions as YAML, the aggregation engine, training frames and the online store.

Import the parts you need from their modules (``definitions``, ``engine``, ``frames``, ``online``,
``online_rows``, ``request``, ``zones``); the names below load their module on first use, so importing one
part does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._lazy import lazy_getattr

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet, load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.features.online import OnlineStore, materialize

_NAMES = {
    "FeatureSet": "definitions",
    "load_feature_set": "definitions",
    "build_frame": "frames",
    "OnlineStore": "online",
    "materialize": "online",
}
__all__ = ["FeatureSet", "OnlineStore", "build_frame", "load_feature_set", "materialize"]

__getattr__ = lazy_getattr(__name__, _NAMES)
