"""Vigil's sources: each one reads raw lines and emits :class:`flows.records.RawLine`.

Importing this package only imports modules; no file is opened and no socket is bound
until bytewax builds a partition.
"""

from __future__ import annotations

from sources.files import FileState, FileTailSource
from sources.replay import ReplaySource
from sources.syslog import SyslogSource

__all__ = ["FileState", "FileTailSource", "ReplaySource", "SyslogSource"]
