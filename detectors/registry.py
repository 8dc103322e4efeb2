"""The one registry of detector kinds, by name, as the configuration's ``kind`` spells them.

The configuration (``flows/config/detectors.py``) has one model per kind here and builds
detectors through :func:`make_detector`; it imports this module only when a detector is
made, so loading a configuration never imports scikit-learn.
"""

from __future__ import annotations

from typing import Any

from vigil.detectors.base import Detector
from vigil.detectors.contextual import ContextualAnomaly
from vigil.detectors.cusum import CUSUM
from vigil.detectors.ensemble import ResonanceEnsemble
from vigil.detectors.ewma import EWMAZScore
from vigil.detectors.isolation_forest import WindowedIsolationForest
from vigil.detectors.knn_cad import KNNCAD
from vigil.detectors.likelihood import AnomalyLikelihood
from vigil.detectors.mad import RollingMAD
from vigil.detectors.page_hinkley import PageHinkley
from vigil.detectors.resonance import AdaptiveResonance
from vigil.detectors.seasonal import SeasonalBaseline
from vigil.detectors.threshold import RateThreshold, StaticThreshold

DETECTORS: dict[str, type] = {
    "ewma_zscore": EWMAZScore,
    "static_threshold": StaticThreshold,
    "rate_threshold": RateThreshold,
    "rolling_mad": RollingMAD,
    "seasonal": SeasonalBaseline,
    "cusum": CUSUM,
    "page_hinkley": PageHinkley,
    "isolation_forest": WindowedIsolationForest,
    # NAB-grade detectors (scores in [0, 1]).
    "contextual": ContextualAnomaly,
    "knn_cad": KNNCAD,
    "resonance": AdaptiveResonance,
    "ensemble": ResonanceEnsemble,
    # A wrapper: its ``detector`` argument is another detector (made first).
    "likelihood": AnomalyLikelihood,
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
