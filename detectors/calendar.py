"""A calendar-aware baseline: an EWMA mean and variance per slot (day type, time of day).

The service-queue flow maps each instant to a slot with its working calendar
(:class:`vigil.flows.queues.calendar.WorkCalendar`); this detector only sees slot numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vigil.detectors.base import Explanation


@dataclass(frozen=True, slots=True)
class CalendarBaselineState:
    n: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    var: tuple[float, ...] = ()


class CalendarBaseline:
    """Signed distance from the usual level of a slot, in standard deviations.

    Counts are the intended input, so the standard deviation is floored at the Poisson
    noise ``sqrt(mean)``: a quiet slot whose few values happened to agree is not made
    over-confident. A slot scores once it has learned ``grace_period`` values; before
    that the explanation is "warming" (score 0, infinite band).

    Score range: ``(-inf, inf)``, positive above the expected level (unlike most
    detectors: the flow needs the direction to tell a surge from a drop).

    Parameters
    ----------
    slots
        Number of slots.
    alpha
        Weight of the newest value in a slot's EWMA, in (0, 1]; the first ``1 / alpha``
        values of a slot are weighted equally.
    grace_period
        Values a slot learns before it scores.
    band_z
        Half-width of the reported band, in standard deviations.
    min_std
        Floor on the standard deviation.

    Examples
    --------
    >>> b = CalendarBaseline(slots=2, grace_period=2)
    >>> for x in (100.0, 110.0, 90.0):
    ...     b.learn_one(0, x)
    >>> e = b.explain_one(0, 200.0)
    >>> round(e.expected), e.score > 4
    (100, True)
    >>> b.explain_one(1, 5.0).score  # slot 1 has learned nothing
    0.0
    """

    def __init__(
        self,
        slots: int,
        alpha: float = 0.2,
        grace_period: int = 2,
        band_z: float = 4.0,
        min_std: float = 1.0,
    ) -> None:
        self.slots = slots
        self.alpha = alpha
        self.grace_period = grace_period
        self.band_z = band_z
        self.min_std = min_std
        self._n = [0] * slots
        self._mean = [0.0] * slots
        self._var = [0.0] * slots

    def std(self, slot: int) -> float:
        return max(math.sqrt(self._var[slot]), math.sqrt(max(self._mean[slot], 0.0)), self.min_std)

    def explain_one(self, slot: int, x: float) -> Explanation:
        if self._n[slot] < self.grace_period:
            return Explanation.warming(x)
        mean, std = self._mean[slot], self.std(slot)
        w = self.band_z * std
        return Explanation((x - mean) / std, mean, mean - w, mean + w)

    def learn_one(self, slot: int, x: float, clip_z: float | None = None) -> None:
        """Learn ``x`` for ``slot``; a warm slot learns it clipped to ``clip_z`` std devs.

        Clipping keeps one storm from inflating the variance for weeks (a winsorized
        EWMA), so the next storm still stands out.
        """
        n = self._n[slot]
        if clip_z is not None and n >= self.grace_period:
            w = clip_z * self.std(slot)
            x = min(max(x, self._mean[slot] - w), self._mean[slot] + w)
        if n == 0:
            self._mean[slot], self._var[slot] = x, 0.0
        else:
            a = max(self.alpha, 1.0 / (n + 1))
            diff = x - self._mean[slot]
            incr = a * diff
            self._mean[slot] += incr
            self._var[slot] = (1 - a) * (self._var[slot] + diff * incr)
        self._n[slot] = n + 1

    def count(self, slot: int) -> int:
        return self._n[slot]

    def snapshot(self) -> CalendarBaselineState:
        return CalendarBaselineState(tuple(self._n), tuple(self._mean), tuple(self._var))

    def restore(self, state: CalendarBaselineState) -> None:
        if len(state.n) == self.slots:
            self._n, self._mean, self._var = list(state.n), list(state.mean), list(state.var)
