"""Vigil's own exceptions: one tree, so callers can catch ``VigilError``.

::

    VigilError
    ├── ConfigError          invalid configuration (raised before any flow is built)
    └── ParseError           a line a parser cannot read; flows turn it into a DeadLetter

(Sinks never raise: a delivery that gives up is logged and counted, see
:mod:`vigil.sinks.webhook`.)
"""

from __future__ import annotations


class VigilError(Exception):
    """Base of every exception Vigil raises on purpose."""


class ConfigError(VigilError):
    """The configuration file is missing, unreadable or invalid."""


class ParseError(VigilError):
    """A parser cannot read a line.

    ``reason`` is stable and low-cardinality (it becomes a metric label); the message can
    carry detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
