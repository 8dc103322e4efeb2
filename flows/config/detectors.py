"""Configuration of detectors: one frozen model per detector kind, and :func:`make_detector`.

Each model mirrors its detector's constructor: the same parameter names, the same defaults
(``tests/test_config_detectors.py`` compares them and lists the deliberate differences),
and the field constraints the constructors leave out (STYLE section 6). :data:`DetectorConfig`
is a discriminated union on ``kind``, so a typo is reported with its path
(``detector.ewma_zscore.alfa: unknown key``).

Adding a detector kind is one line in the registry (``DETECTORS`` in
``detectors/registry.py``), one model here and one line in :data:`_KINDS`. The registry is
imported only when a detector is made, so loading a configuration never imports
scikit-learn or the NAB-tuned detectors.

Examples
--------
>>> from pydantic import TypeAdapter
>>> cfg = TypeAdapter(DetectorConfig).validate_python({"kind": "rolling_mad", "window": 50})
>>> det = make_detector(cfg)
>>> type(det).__name__, det.window, det.grace_period
('RollingMAD', 50, 30)
>>> wrapped = TypeAdapter(DetectorConfig).validate_python(
...     {"kind": "likelihood", "detector": {"kind": "ewma_zscore", "alpha": 0.2}})
>>> det = make_detector(wrapped)
>>> type(det).__name__, type(det.detector).__name__, det.detector.alpha
('AnomalyLikelihood', 'EWMAZScore', 0.2)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import Field
from vigil.detectors.base import Detector
from vigil.flows.config.base import Frozen


class _DetectorBase(Frozen):
    """Common part: ``kind`` names the detector (a key of ``DETECTORS``)."""

    if TYPE_CHECKING:  # each model declares its own Literal kind
        kind: str

    def params(self) -> dict[str, Any]:
        """The constructor's keyword arguments (every field except ``kind``)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name != "kind"}


# ---------------------------------------------------------------- the detector library
class EWMAZScoreConfig(_DetectorBase):
    """:class:`vigil.detectors.ewma.EWMAZScore`: distance from an EWMA in standard deviations."""

    kind: Literal["ewma_zscore"] = "ewma_zscore"
    alpha: float = Field(default=0.05, gt=0, le=1)
    grace_period: int = Field(default=30, ge=0)
    band_z: float = Field(default=4.0, gt=0)
    min_std: float = Field(default=1e-9, gt=0)


class StaticThresholdConfig(_DetectorBase):
    """:class:`vigil.detectors.threshold.StaticThreshold`: how far outside ``[lower, upper]``."""

    kind: Literal["static_threshold"] = "static_threshold"
    lower: float = -math.inf
    upper: float = math.inf


class RateThresholdConfig(_DetectorBase):
    """:class:`vigil.detectors.threshold.RateThreshold`: events per second over a sliding window."""

    kind: Literal["rate_threshold"] = "rate_threshold"
    max_per_s: float = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0)


class RollingMADConfig(_DetectorBase):
    """:class:`~vigil.detectors.mad.RollingMAD`: robust z-score from a window's median, MAD."""

    kind: Literal["rolling_mad"] = "rolling_mad"
    window: int = Field(default=100, ge=2)
    grace_period: int = Field(default=30, ge=0)
    band_z: float = Field(default=4.0, gt=0)
    min_std: float = Field(default=1e-9, gt=0)


class SeasonalConfig(_DetectorBase):
    """:class:`vigil.detectors.seasonal.SeasonalBaseline`: an EWMA per hour of day (and weekday)."""

    kind: Literal["seasonal"] = "seasonal"
    period: Literal["week_hour", "day_hour"] = "week_hour"
    tz: str = "Asia/Ho_Chi_Minh"
    alpha: float = Field(default=0.1, gt=0, le=1)
    grace_period: int = Field(default=2, ge=0)
    band_z: float = Field(default=4.0, gt=0)
    min_std: float = Field(default=1e-9, gt=0)


class CUSUMConfig(_DetectorBase):
    """:class:`vigil.detectors.cusum.CUSUM`: two-sided cumulative sum of standardised deviations."""

    kind: Literal["cusum"] = "cusum"
    k: float = Field(default=0.5, ge=0)
    h: float = Field(default=5.0, gt=0)
    alpha: float = Field(default=0.01, gt=0, le=1)
    grace_period: int = Field(default=30, ge=0)
    min_std: float = Field(default=1e-9, gt=0)


class PageHinkleyConfig(_DetectorBase):
    """:class:`vigil.detectors.page_hinkley.PageHinkley`: change in the mean (Page-Hinkley test)."""

    kind: Literal["page_hinkley"] = "page_hinkley"
    delta: float = Field(default=0.005, ge=0)
    threshold: float = Field(default=50.0, gt=0)
    alpha: float = Field(default=0.9999, gt=0, le=1)
    grace_period: int = Field(default=30, ge=0)


class IsolationForestConfig(_DetectorBase):
    """:class:`~vigil.detectors.isolation_forest.WindowedIsolationForest` (sliding refit)."""

    kind: Literal["isolation_forest"] = "isolation_forest"
    window: int = Field(default=256, ge=2)
    refit_every: int = Field(default=64, ge=1)
    n_estimators: int = Field(default=50, ge=1)
    seed: int = Field(default=0, ge=0)
    grace_period: int = Field(default=64, ge=0)
    n_features: int = Field(default=1, ge=1)


# ---------------------------------------------------------------- NAB-tuned detectors
class ContextualConfig(_DetectorBase):
    """:class:`vigil.detectors.contextual.ContextualAnomaly` (CAD OSE style). Score in [0, 1]."""

    kind: Literal["contextual"] = "contextual"
    input_min: float | None = None
    input_max: float | None = None
    probationary_period: int = Field(default=750, ge=0)
    rest_period: int | None = Field(default=None, ge=0)
    base_threshold: float = Field(default=0.75, ge=0)
    max_left_length: int = Field(default=7, ge=1)
    max_active: int = Field(default=15, ge=1)
    value_bits: int = Field(default=3, ge=1)


class KNNCADConfig(_DetectorBase):
    """:class:`vigil.detectors.knn_cad.KNNCAD`: conformal k-nearest neighbours. Score in [0, 1]."""

    kind: Literal["knn_cad"] = "knn_cad"
    probationary_period: int = Field(default=750, ge=0)
    dim: int = Field(default=19, ge=1)
    k: int = Field(default=27, ge=1)
    alarm_level: float = Field(default=0.9965, gt=0, le=1)
    rest_fraction: float = Field(default=0.2, ge=0)
    rest_score: float = Field(default=0.5, ge=0, le=1)


class ResonanceConfig(_DetectorBase):
    """:class:`vigil.detectors.resonance.AdaptiveResonance` (ARTime style). Score in [0, 1]."""

    kind: Literal["resonance"] = "resonance"
    input_min: float | None = None
    input_max: float | None = None
    probationary_period: int = Field(default=750, ge=0)
    window: int = Field(default=8, ge=1)
    windows_per_probation: int = Field(default=13, ge=1)
    levels: int = Field(default=80, ge=2)
    chomp: float = Field(default=0.075, ge=0)
    spike_fraction: float = Field(default=0.1, ge=0)
    initial_rho: float = Field(default=0.8, gt=0, le=1)
    rho_cap: float = Field(default=0.97, gt=0, le=1)


class EnsembleConfig(_DetectorBase):
    """:class:`vigil.detectors.ensemble.ResonanceEnsemble`. Score in [0, 1]."""

    kind: Literal["ensemble"] = "ensemble"
    input_min: float | None = None
    input_max: float | None = None
    probationary_period: int = Field(default=750, ge=0)
    gate_floor: float = Field(default=0.3, ge=0)
    gate_z: float = Field(default=2.0, ge=0)
    gate_window: int = Field(default=500, ge=1)
    range_tolerance: float = Field(default=0.05, ge=0)
    range_score: float = Field(default=0.5, ge=0, le=1)
    range_rest: int = Field(default=100, ge=0)


# ---------------------------------------------------------------- wrappers
class LikelihoodConfig(_DetectorBase):
    """:class:`vigil.detectors.likelihood.AnomalyLikelihood` around any other detector.

    Score in [0, 1] (the probability that the recent raw scores are this high).
    """

    kind: Literal["likelihood"] = "likelihood"
    detector: DetectorConfig = EWMAZScoreConfig()
    learning_period: int = Field(default=288, ge=0)
    estimation_samples: int = Field(default=100, ge=1)
    historic_window: int = Field(default=8640, ge=2)
    reestimation_period: int = Field(default=100, ge=1)
    averaging_window: int = Field(default=10, ge=1)
    log_scale: bool = False


#: Every configurable kind. Adding a detector: its model above, and one line here.
_KINDS: tuple[type[_DetectorBase], ...] = (
    EWMAZScoreConfig,
    StaticThresholdConfig,
    RateThresholdConfig,
    RollingMADConfig,
    SeasonalConfig,
    CUSUMConfig,
    PageHinkleyConfig,
    IsolationForestConfig,
    ContextualConfig,
    KNNCADConfig,
    ResonanceConfig,
    EnsembleConfig,
    LikelihoodConfig,
)

if TYPE_CHECKING:
    DetectorConfig: TypeAlias = _DetectorBase
else:
    # Union[...] over a tuple: the one spelling that builds a union from a runtime sequence.
    DetectorConfig = Annotated[Union[_KINDS], Field(discriminator="kind")]  # noqa: UP007
    """Any detector's configuration, chosen by ``kind``."""

LikelihoodConfig.model_rebuild()

#: kind -> its configuration model.
CONFIGS: dict[str, type[_DetectorBase]] = {c.model_fields["kind"].default: c for c in _KINDS}


def detector_class(cfg: _DetectorBase | type[_DetectorBase]) -> type:
    """The detector class a configuration (or configuration model) builds."""
    from vigil.detectors.registry import DETECTORS

    model = cfg if isinstance(cfg, type) else type(cfg)
    cls: type = DETECTORS[model.model_fields["kind"].default]
    return cls


def make_detector(cfg: Any) -> Detector[Any]:
    """A new, empty detector as ``cfg`` describes it.

    Parameters
    ----------
    cfg
        One of the models of :data:`DetectorConfig`. A wrapper's inner ``detector`` is
        made first and passed in.

    Examples
    --------
    >>> det = make_detector(EWMAZScoreConfig(alpha=0.2))
    >>> type(det).__name__, det.alpha, det.grace_period
    ('EWMAZScore', 0.2, 30)
    """
    params = cfg.params()
    for name, value in params.items():
        if isinstance(value, _DetectorBase):
            params[name] = make_detector(value)
    from vigil.detectors.registry import make_detector as make

    return make(cfg.kind, **params)
