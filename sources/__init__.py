"""Vigil's sources: each one reads raw lines and emits :class:`vigil.records.RawLine`.

Importing this package only imports modules; no file is opened and no socket is bound
until bytewax builds a partition.
"""

from __future__ import annotations

from vigil.sources.files import FileState, FileTailSource
from vigil.sources.replay import ReplaySource
from vigil.sources.syslog import SyslogSource

__all__ = ["FileState", "FileTailSource", "ReplaySource", "SyslogSource"]
