"""``vigil scorecard build`` and ``vigil scorecard serve``: the public scorecard site.

::

    vigil scorecard build --config C --out DIR [--period 2015-02 | 30d] [--lang en]
    vigil scorecard serve --config C [--port 8750] [--host 127.0.0.1] [--refresh 10]

``serve`` answers every page of the site (``/``, ``/agency/X.html``, the JSON and CSV)
from memory, and keeps it current the simple, honest way: on a request, if ``--refresh``
seconds have passed since the last look, it checks the size and modification time of
every file the ``service_queues`` inputs read (the same files the running queue flow
tails); when one changed, it re-reads them all and recomputes every figure before
answering. It does not read the flow's in-memory state: the records are the source, so
the page equals ``vigil report service-queues`` on the same files at that moment. With
the default ``--period 30d`` the window ends on the day of the latest event, so the page
moves on as records arrive. A failed re-read (a file being rotated) keeps the last good
pages and logs one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from vigil.flows.config import load_config
from vigil.flows.queues.cli import load_events
from vigil.flows.queues.config import QueueFileInput, ServiceQueuesConfig
from vigil.flows.queues.site import PeriodError, build_site, parse_period, write_site

log = logging.getLogger("vigil.scorecard")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}
#: No script, no external anything: the browser enforces what the pages promise.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'"


def _section(path: str) -> ServiceQueuesConfig:
    cfg: ServiceQueuesConfig = load_config(path).service_queues
    if not cfg.inputs:
        msg = f"{path} has no service_queues.inputs"
        raise PeriodError(msg)
    return cfg


def _render(cfg: ServiceQueuesConfig, args: argparse.Namespace) -> dict[str, bytes]:
    events = load_events(cfg)
    latest = max((getattr(e, "ts", 0.0) for e in events), default=None)
    period = parse_period(args.period, args.from_, args.to, cfg.calendar.timezone, latest)
    return build_site(events, period, lang=args.lang, latest=latest)


def cmd_build(args: argparse.Namespace) -> int:
    try:
        cfg = _section(args.config)
        files = _render(cfg, args)
    except PeriodError as ex:
        print(f"vigil scorecard: {ex}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"vigil scorecard: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    write_site(files, out)
    agencies = sum(1 for k in files if k.startswith("agency/") and k.endswith(".html"))
    print(f"wrote {len(files)} files to {out}/ ({agencies} agency pages); open {out}/index.html")
    return 0


def _signature(cfg: ServiceQueuesConfig) -> tuple[tuple[str, int, int], ...]:
    sig = []
    for inp in cfg.inputs:
        if not isinstance(inp, QueueFileInput):
            continue
        for p in inp.paths:
            try:
                st = os.stat(p)
            except OSError:
                sig.append((p, -1, -1))
            else:
                sig.append((p, st.st_size, st.st_mtime_ns))
    return tuple(sig)


class LiveSite:
    """The site's files, recomputed from the inputs when they change (see module doc).

    Parameters
    ----------
    render
        Computes every file of the site from the inputs.
    signature
        A cheap fingerprint of the inputs (sizes and modification times).
    refresh_s
        Look at the fingerprint at most this often.
    clock
        Monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        render: Callable[[], dict[str, bytes]],
        signature: Callable[[], object],
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.render = render
        self.signature = signature
        self.refresh_s = refresh_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sig = signature()
        self._files = render()
        self._checked = clock()
        self.recomputed = 0

    def files(self) -> dict[str, bytes]:
        with self._lock:
            now = self.clock()
            if now - self._checked >= self.refresh_s:
                self._checked = now
                sig = self.signature()
                if sig != self._sig:
                    try:
                        self._files = self.render()
                    except (OSError, ValueError) as ex:
                        log.warning("scorecard: inputs unreadable, keeping last pages: %s", ex)
                    else:
                        self._sig = sig
                        self.recomputed += 1
            return self._files


def make_handler(site: LiveSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vigil-scorecard"

        def _send(self, head_only: bool) -> None:
            path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
            if path.endswith("/"):
                path += "index.html"
            data = site.files().get(path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", _TYPES.get(Path(path).suffix, "text/plain"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Security-Policy", _CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if not head_only:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(False)

        def do_HEAD(self) -> None:
            self._send(True)

        def log_message(self, format: str, *args: Any) -> None:
            # Client addresses are personal data: log nothing per request.
            return

    return Handler


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        cfg = _section(args.config)
        site = LiveSite(lambda: _render(cfg, args), lambda: _signature(cfg), refresh_s=args.refresh)
    except PeriodError as ex:
        print(f"vigil scorecard: {ex}", file=sys.stderr)
        return 2
    try:
        httpd = ThreadingHTTPServer((args.host, args.port), make_handler(site))
    except OSError as ex:
        print(
            f"vigil scorecard: cannot listen on {args.host}:{args.port}: {ex.strerror or ex}",
            file=sys.stderr,
        )
        return 2
    host, port = httpd.server_address[:2]
    print(
        f"serving the scorecard on http://{host!s}:{port}/ (recomputed from the inputs when "
        f"they change, checked at most every {args.refresh:g} s); Ctrl-C stops",
        flush=True,
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def _refresh(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not f >= 0:
        msg = f"must be a number of seconds >= 0, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return f


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        msg = f"must be a port number 0-65535, got {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return n


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="YAML with a service_queues section")
    p.add_argument(
        "--period",
        help="YYYY-MM (a month) or Nd (the N days up to the latest event); default 30d",
    )
    p.add_argument("--from", dest="from_", metavar="DATE", help="start (local), inclusive")
    p.add_argument("--to", metavar="DATE", help="end (local), exclusive")
    p.add_argument("--lang", choices=("vi", "en"), default="vi", help="page language (vi)")


def register_scorecard(sub: Any) -> None:
    """Add ``vigil scorecard build|serve`` to the CLI."""
    sc = sub.add_parser("scorecard", help="the public scorecard as a web site (build, serve)")
    ss = sc.add_subparsers(dest="scorecard", required=True, metavar="ACTION")
    b = ss.add_parser("build", help="write the static site (HTML, JSON, CSV)")
    _common(b)
    b.add_argument("--out", "-o", required=True, help="folder to write the site into")
    b.set_defaults(func=cmd_build)
    s = ss.add_parser("serve", help="serve the site, recomputed as records arrive")
    _common(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    s.add_argument("--port", type=_port, default=8750, help="port (8750; 0 = any free one)")
    s.add_argument(
        "--refresh",
        type=_refresh,
        default=10.0,
        help="look for new records at most every S seconds (10)",
    )
    s.set_defaults(func=cmd_serve)
