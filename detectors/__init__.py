"""detectors package of Vigil."""

from __future__ import annotations
