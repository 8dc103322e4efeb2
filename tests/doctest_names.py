"""A pytest plugin (``-p tests.doctest_names``): doctests import their module by its
installed name (``vigil.flows.cli``).

The top-level folders are installed under the ``vigil`` namespace (``pyproject.toml``,
``package-dir``); pytest would otherwise import ``flows/cli/__init__.py`` a second time as a
module named ``flows.cli``, with state of its own.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from _pytest.doctest import DoctestModule

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "sources", "sinks", "detectors", "dashboards", "vigil")
_original = DoctestModule._getobj


def _installed_name(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(ROOT).with_suffix("")
    except ValueError:
        return None
    parts = list(rel.parts)
    if not parts or parts[0] not in PACKAGES:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "vigil" else ["vigil", *parts])


def _getobj(self: DoctestModule) -> ModuleType:
    name = _installed_name(Path(self.path))
    return importlib.import_module(name) if name else _original(self)


DoctestModule._getobj = _getobj  # type: ignore[method-assign]
