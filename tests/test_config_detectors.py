"""The detector configuration mirrors the detector constructors (STYLE section 6)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from vigil.detectors.registry import DETECTORS
from vigil.flows.config import parse_config
from vigil.flows.config.detectors import (
    CONFIGS,
    DetectorConfig,
    EWMAZScoreConfig,
    LikelihoodConfig,
    detector_class,
    make_detector,
)
from vigil.flows.security.config import VolumeRule

ADAPTER: TypeAdapter[Any] = TypeAdapter(DetectorConfig)

#: Deliberate differences between a config default and its constructor's default, with why.
#: (kind, parameter) -> (config default, constructor default).
DIFFERENCES: dict[tuple[str, str], tuple[Any, Any]] = {
    # A wrapper's constructor requires the detector it wraps; a config needs a default.
    ("likelihood", "detector"): (EWMAZScoreConfig(), inspect.Parameter.empty),
}


def _cases() -> list[tuple[str, str, Any, Any]]:
    out = []
    for kind, model in CONFIGS.items():
        sig = inspect.signature(detector_class(model).__init__)
        for name, param in sig.parameters.items():
            if name == "self":
                continue
            field = model.model_fields.get(name)
            cfg_default = (
                inspect.Parameter.empty if field is None or field.is_required() else field.default
            )
            out.append((kind, name, cfg_default, param.default))
    return out


def test_every_registered_kind_is_configurable() -> None:
    assert set(DETECTORS) == set(CONFIGS)  # one registry: every kind configurable
    for kind, cls in DETECTORS.items():
        assert detector_class(CONFIGS[kind]) is cls


@pytest.mark.parametrize("model", list(CONFIGS.values()), ids=list(CONFIGS))
def test_fields_are_the_constructor_parameters(model: Any) -> None:
    params = set(inspect.signature(detector_class(model).__init__).parameters) - {"self"}
    assert set(model.model_fields) - {"kind"} == params


@pytest.mark.parametrize(("kind", "name", "cfg_default", "ctor_default"), _cases())
def test_config_defaults_equal_constructor_defaults(
    kind: str, name: str, cfg_default: Any, ctor_default: Any
) -> None:
    if (kind, name) in DIFFERENCES:
        assert (cfg_default, ctor_default) == DIFFERENCES[(kind, name)]
        return
    assert cfg_default == ctor_default or (
        isinstance(cfg_default, float) and math.isnan(cfg_default) and math.isnan(ctor_default)
    ), f"{kind}.{name}: config {cfg_default!r} != constructor {ctor_default!r}"


@pytest.mark.parametrize("kind", [k for k in CONFIGS if k != "rate_threshold"])
def test_defaults_build_a_detector_that_scores(kind: str) -> None:
    det = make_detector(ADAPTER.validate_python({"kind": kind}))
    for i in range(5):
        det.learn_one(float(i % 3), 60.0 * i)
    assert math.isfinite(det.score_one(1.0, 300.0))


def test_parameters_reach_the_detector_unchanged() -> None:
    cfg = ADAPTER.validate_python({"kind": "seasonal", "period": "day_hour", "tz": "UTC"})
    det = make_detector(cfg)
    assert (det.period, det.tz, det.alpha) == ("day_hour", "UTC", 0.1)
    rate = make_detector(ADAPTER.validate_python({"kind": "rate_threshold", "max_per_s": 2}))
    assert rate.max_per_s == 2.0


def test_wrapper_nests_any_detector() -> None:
    cfg = ADAPTER.validate_python(
        {"kind": "likelihood", "log_scale": True, "detector": {"kind": "rolling_mad"}}
    )
    assert isinstance(cfg, LikelihoodConfig)
    det = make_detector(cfg)
    assert type(det.detector).__name__ == "RollingMAD" and det.log_scale is True


def test_typo_is_rejected_with_its_path() -> None:
    with pytest.raises(ValidationError) as ex:
        VolumeRule.model_validate({"detector": {"kind": "ewma_zscore", "alfa": 0.1}})
    locs = [".".join(map(str, e["loc"])) for e in ex.value.errors()]
    assert locs == ["detector.ewma_zscore.alfa"]
    with pytest.raises(ValidationError):
        ADAPTER.validate_python({"kind": "ewma"})
    with pytest.raises(ValidationError):
        ADAPTER.validate_python({"kind": "ewma_zscore", "alpha": 0})


def test_security_volume_takes_any_detector_and_keeps_ewma_default() -> None:
    assert VolumeRule().detector == EWMAZScoreConfig(alpha=0.1, grace_period=30, min_std=2.0)
    cfg = parse_config(
        {"security": {"rules": {"volume": {"detector": {"kind": "rolling_mad", "window": 60}}}}}
    )
    assert make_detector(cfg.security.rules.volume.detector).window == 60


def test_config_is_frozen() -> None:
    cfg = EWMAZScoreConfig()
    with pytest.raises(ValidationError):
        cfg.alpha = 0.5  # type: ignore[misc]
