"""Configuration section of the media-mentions flow (flows/media.py)."""

from __future__ import annotations

from flows.config_base import Frozen


class MediaConfig(Frozen):
    """Settings of the media-mentions flow (flows/media.py). Empty until that feature lands."""
