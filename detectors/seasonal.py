"""Seasonal baseline: an EWMA mean and variance per hour of the week (or of the day)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from vigil.detectors.base import Explanation

_SLOTS = {"week_hour": 7 * 24, "day_hour": 24}


def _ewma_step(n: int, mean: float, var: float, x: float, alpha: float) -> tuple[float, float]:
    """One exponentially weighted update of ``(mean, var)`` after ``n`` earlier values.

    The weight is ``max(alpha, 1 / (n + 1))``: the first ``1 / alpha`` values get equal
    weight (a plain running mean and variance), so early estimates are not dominated by
    the first value nor biased towards a variance of 0.
    """
    a = max(alpha, 1.0 / (n + 1))
    diff = x - mean
    incr = a * diff
    # West's incremental weighted variance: stays >= 0 and needs no stored window.
    return mean + incr, (1 - a) * (var + diff * incr)


@dataclass(frozen=True, slots=True)
class SeasonalBaselineState:
    #: Per slot (empty until the first value): count, EWMA mean and EWMA variance.
    n: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    var: tuple[float, ...] = ()
    #: The same over all values, used while a slot is cold.
    global_n: int = 0
    global_mean: float = 0.0
    global_var: float = 0.0


class SeasonalBaseline:
    """Distance from the usual level for this hour of the week, in standard deviations.

    Each value is assigned a slot by its event time in local time ``tz``: the hour of the
    week (``"week_hour"``, 168 slots, Monday 00:00 is slot 0) or the hour of the day
    (``"day_hour"``, 24 slots). Each slot keeps its own EWMA mean and variance; so does a
    global baseline over all values, which scores while a slot has fewer than
    ``grace_period`` values of its own. A slot's variance starts from the global variance,
    so a slot with few values is not over-confident. Time zones with daylight saving time
    are handled by ``zoneinfo``: the slot follows the local wall clock.

    Score range: ``[0, inf)``; ``0.0`` while neither the slot nor the global baseline has
    ``grace_period`` values.

    Parameters
    ----------
    period
        ``"week_hour"`` (hour of day x day of week) or ``"day_hour"`` (hour of day).
    tz
        IANA time zone the slots are defined in.
    alpha
        Weight of the newest value in a slot's EWMA, in (0, 1]. Larger adapts faster.
    grace_period
        Number of values a slot (and the global baseline) must learn before it scores.
    band_z
        Width of the reported band, in standard deviations.
    min_std
        Floor on the standard deviation, so a flat series does not make every change
        infinitely anomalous.

    Raises
    ------
    ValueError
        If ``ts`` is not given (slots need event time), or ``period`` is unknown.

    Examples
    --------
    Busy at 09:00 local time, quiet at 03:00, for two weeks of days:

    >>> det = SeasonalBaseline(period="day_hour", tz="Asia/Ho_Chi_Minh", grace_period=3)
    >>> day, t0 = 86_400, 1_704_067_200  # 2024-01-01T00:00Z, 07:00 in Ho Chi Minh City
    >>> for d in range(14):
    ...     det.learn_one(100.0 + d % 3, t0 + d * day + 2 * 3600)  # 09:xx local
    ...     det.learn_one(10.0 + d % 2, t0 + d * day + 20 * 3600)  # 03:xx local
    >>> det.score_one(101.0, t0 + 14 * day + 2 * 3600) < 1  # normal for 09:00
    True
    >>> det.score_one(101.0, t0 + 14 * day + 20 * 3600) > 10  # not for 03:00
    True
    >>> det.slot(t0 + 2 * 3600)
    9

    References
    ----------
    .. [1] Hyndman, R. J. and Athanasopoulos, G. (2021). Forecasting: Principles and
       Practice, 3rd ed., section 8.3 (seasonal exponential smoothing). OTexts.
    """

    def __init__(
        self,
        period: str = "week_hour",
        tz: str = "Asia/Ho_Chi_Minh",
        alpha: float = 0.1,
        grace_period: int = 2,
        band_z: float = 4.0,
        min_std: float = 1e-9,
    ) -> None:
        self.period = period
        self.tz = tz
        self.alpha = alpha
        self.grace_period = grace_period
        self.band_z = band_z
        self.min_std = min_std
        self._state = SeasonalBaselineState()
        # The last (ts, tz, period) looked up and its slot: a value is usually scored,
        # explained and learnt at one event time.
        self._slot_memo: tuple[float, str, str, int] | None = None

    def _n_slots(self) -> int:
        try:
            return _SLOTS[self.period]
        except KeyError:
            msg = f"unknown SeasonalBaseline period {self.period!r}; use one of {sorted(_SLOTS)}"
            raise ValueError(msg) from None

    def slot(self, ts: float | None) -> int:
        """The slot event time ``ts`` falls in: ``weekday * 24 + hour`` or ``hour``, local."""
        memo = getattr(self, "_slot_memo", None)
        if memo is not None and memo[0] == ts and memo[1] == self.tz and memo[2] == self.period:
            return memo[3]
        n_slots = self._n_slots()
        if ts is None:
            msg = "SeasonalBaseline needs the event time: pass ts (epoch seconds)"
            raise ValueError(msg)
        local = datetime.fromtimestamp(ts, tz=ZoneInfo(self.tz))  # ZoneInfo caches by key
        i = (local.weekday() * 24 + local.hour) % n_slots
        self._slot_memo = (ts, self.tz, self.period, i)
        return i

    def _band(self, x: float, mean: float, var: float) -> Explanation:
        std = max(math.sqrt(var), self.min_std)
        width = self.band_z * std
        return Explanation(abs(x - mean) / std, mean, mean - width, mean + width)

    def explain_one(self, x: float, ts: float | None = None) -> Explanation:
        i = self.slot(ts)
        s = self._state
        if s.n and s.n[i] >= self.grace_period:
            return self._band(x, s.mean[i], s.var[i])
        if s.global_n >= self.grace_period:
            return self._band(x, s.global_mean, s.global_var)
        return Explanation.warming(x)

    def score_one(self, x: float, ts: float | None = None) -> float:
        return self.explain_one(x, ts).score

    def learn_one(self, x: float, ts: float | None = None) -> None:
        i = self.slot(ts)
        s = self._state
        ns, means, vars_ = s.n, s.mean, s.var
        if not ns:
            k = self._n_slots()
            ns, means, vars_ = (0,) * k, (0.0,) * k, (0.0,) * k
        if ns[i] == 0:
            # A new slot borrows the global variance as its prior.
            mean, var = x, s.global_var
        else:
            mean, var = _ewma_step(ns[i], means[i], vars_[i], x, self.alpha)
        if s.global_n == 0:
            g_mean, g_var = x, 0.0
        else:
            g_mean, g_var = _ewma_step(s.global_n, s.global_mean, s.global_var, x, self.alpha)
        self._state = SeasonalBaselineState(
            (*ns[:i], ns[i] + 1, *ns[i + 1 :]),
            (*means[:i], mean, *means[i + 1 :]),
            (*vars_[:i], var, *vars_[i + 1 :]),
            s.global_n + 1,
            g_mean,
            g_var,
        )

    def snapshot(self) -> SeasonalBaselineState:
        return self._state

    def restore(self, state: SeasonalBaselineState) -> None:
        if state.n and len(state.n) != self._n_slots():
            # Saved under another period: its slots mean nothing now. Keep the global
            # baseline and let the slots warm up again.
            state = SeasonalBaselineState(
                global_n=state.global_n,
                global_mean=state.global_mean,
                global_var=state.global_var,
            )
        self._state = state
