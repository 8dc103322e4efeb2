"""Vigil: a stream-processing monitoring engine for an intelligent operations centre.

Everything Vigil installs lives under this one namespace, so nothing generic lands at the
top of ``site-packages``. The subpackages are the project's top-level folders, mapped by
``pyproject.toml`` (``package-dir``):

=====================  ===============  =============================================
import name            folder           what
=====================  ===============  =============================================
``vigil.sources``      ``sources/``     files, syslog, replay, the Redis Streams bus
``vigil.flows``        ``flows/``       configuration, records, parsers, the feeds, CLI
``vigil.detectors``    ``detectors/``   streaming detectors behind one interface
``vigil.sinks``        ``sinks/``       Prometheus, alerting pipeline, webhooks
``vigil.dashboards``   ``dashboards/``  Grafana dashboards built from metric names
=====================  ===============  =============================================
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vigil-ioc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
