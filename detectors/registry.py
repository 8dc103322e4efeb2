"""Detector kinds by name, as the configuration's ``kind`` field spells them."""

from __future__ import annotations

from typing import Any

from detectors.base import Detector
from detectors.contextual import ContextualAnomaly
from detectors.cusum import CUSUM
from detectors.ensemble import ResonanceEnsemble
from detectors.ewma import EWMAZScore
from detectors.isolation_forest import WindowedIsolationForest
from detectors.knn_cad import KNNCAD
from detectors.mad import RollingMAD
from detectors.page_hinkley import PageHinkley
from detectors.resonance import AdaptiveResonance
from detectors.seasonal import SeasonalBaseline
from detectors.threshold import RateThreshold, StaticThreshold

DETECTORS: dict[str, type] = {
    "ewma_zscore": EWMAZScore,
    "static_threshold": StaticThreshold,
    "rate_threshold": RateThreshold,
    "rolling_mad": RollingMAD,
    "seasonal": SeasonalBaseline,
    "cusum": CUSUM,
    "page_hinkley": PageHinkley,
    "isolation_forest": WindowedIsolationForest,
    # NAB-grade detectors (scores in [0, 1]); the anomaly-likelihood wrapper takes a
    # detector as an argument, so it is built through flows/config_detectors.py instead.
    "contextual": ContextualAnomaly,
    "knn_cad": KNNCAD,
    "resonance": AdaptiveResonance,
    "ensemble": ResonanceEnsemble,
}


def make_detector(kind: str, **params: Any) -> Detector[Any]:
    """A new detector of ``kind``, with ``params`` as its constructor's keyword arguments.

    Raises
    ------
    ValueError
        If ``kind`` is not in ``DETECTORS``.
    TypeError
        If a parameter is not one of that detector's.

    Examples
    --------
    >>> det = make_detector("rolling_mad", window=50, grace_period=10)
    >>> type(det).__name__, det.window
    ('RollingMAD', 50)
    >>> make_detector("ewma")
    Traceback (most recent call last):
    ...
    ValueError: unknown detector kind 'ewma'; known kinds: contextual, cusum, ...
    """
    try:
        cls = DETECTORS[kind]
    except KeyError:
        msg = f"unknown detector kind {kind!r}; known kinds: {', '.join(sorted(DETECTORS))}"
        raise ValueError(msg) from None
    det: Detector[Any] = cls(**params)
    return det
