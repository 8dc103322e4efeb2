"""flows/evaluation."""

from __future__ import annotations
