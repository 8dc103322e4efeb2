"""Optional parts installed as extras (``pip install 'vigil-ioc[grafana]'``), and the one
clear message when one is missing.

::

    api = need("grafana_client", "grafana", "vigil dashboards push")
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def need(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as ex:
        msg = f"{feature} needs the {extra!r} extra: pip install 'vigil-ioc[{extra}]'"
        raise MissingExtra(msg) from ex


def have(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it twice)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
