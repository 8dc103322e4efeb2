"""Render the overview dashboard from real query results: ``docs/overview.png``.

Grafana cannot run on the build machine, so this draws each panel of the overview's JSON
(``vigil.dashboards.overview``) with matplotlib, at its place on the 24-column grid, from the
results Prometheus returns for that panel's own queries. It starts a real ``prometheus``
scraping ``vigil demo --follow`` (the bundled logs replayed over about a minute), waits
for the replay to finish, then queries and draws.

    python docs/make_overview.py [--out docs/overview.png] [--speed 40000]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import yaml
from vigil.dashboards import build_all
from vigil.dashboards.core import VIGIL_JOB
from vigil.dashboards.promql import expand

COLOURS = {"green": "#37872d", "orange": "#e0752d", "red": "#c4162a", "blue": "#1f60c4"}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def _colour(value: float, steps: list[dict[str, Any]]) -> str:
    c = "green"
    for s in steps:
        if s.get("value") is None or value >= s["value"]:
            c = s["color"]
    return COLOURS.get(c, c)


def _fmt(v: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{v:.0%}"
    if unit == "s":
        for size, name in ((86400 * 365, "y"), (86400, "d"), (3600, "h"), (60, "min")):
            if abs(v) >= size:
                return f"{v / size:.1f} {name}"
        return f"{v:.0f} s"
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.2g}"


def render(prom_url: str, start: float, end: float, out: Path) -> None:
    """Draw the overview's panels from Prometheus's answers to their queries."""
    board = build_all()["overview"]
    http = httpx.Client(base_url=prom_url, timeout=10)
    macros = {"__rate_interval": "20s", "__range": f"{int(end - start)}s", "__interval": "5s"}
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h, head, foot = 0.42, 0.5, 0.35  # inches: one grid unit, title, bottom margin
    height = rows * unit_h + head + foot
    fig = plt.figure(figsize=(24 * 0.75, height), facecolor="#111217")
    fig.suptitle(
        f"{board['title']}: a rendering of the dashboard's queries on `vigil demo` data "
        f"(Prometheus, {datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M} UTC)",
        color="white",
        fontsize=13,
        x=0.01,
        ha="left",
        y=0.995,
    )
    top, bottom = 1 - head / height, foot / height
    span = top - bottom
    for p in panels:
        g = p["gridPos"]
        rect = [
            g["x"] / 24 + 0.003,
            top - (g["y"] + g["h"]) / rows * span + 0.004,
            g["w"] / 24 - 0.006,
            g["h"] / rows * span - 0.03,
        ]
        if p["type"] in ("timeseries", "bargauge"):  # room for the axes' tick labels
            pad = 0.06 if p["type"] == "bargauge" else 0.03
            rect = [rect[0] + pad, rect[1] + 0.02, rect[2] - pad - 0.004, rect[3] - 0.02]
        if p["type"] == "row":
            fig.text(
                rect[0],
                rect[1] + rect[3] / 2,
                p["title"],
                color="#ccccdc",
                fontsize=12,
                weight="bold",
                va="center",
            )
            continue
        ax = fig.add_axes(rect, facecolor="#181b1f")
        ax.set_title(p["title"], color="#ccccdc", fontsize=10, loc="left")
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        targets = p.get("targets", [])
        if p["type"] == "text":
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                re.sub(r"[*`]", "", p["options"]["content"]),
                color="#8e8e8e",
                ha="center",
                va="center",
                wrap=True,
                fontsize=8,
                transform=ax.transAxes,
            )
            continue
        series: list[tuple[str, Any]] = []
        for t in targets:
            expr = expand(t["expr"], {}, macros)
            if t.get("instant"):
                r = http.get("/api/v1/query", params={"query": expr, "time": end}).json()
            else:
                r = http.get(
                    "/api/v1/query_range",
                    params={"query": expr, "start": start, "end": end, "step": 5},
                ).json()
            for res in r["data"]["result"]:
                series.append((_legend(t.get("legendFormat", ""), res["metric"]), res))
        if not series:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                "No data",
                color="#8e8e8e",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        if p["type"] == "timeseries":
            for i, (name, res) in enumerate(series[:8]):
                xs = [datetime.fromtimestamp(float(v[0]), UTC) for v in res["values"]]
                ys = [float(v[1]) for v in res["values"]]
                ax.plot(xs, ys, label=name, color=PALETTE[i % len(PALETTE)], lw=1.3)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.legend(
                fontsize=7,
                loc="upper left",
                facecolor="#181b1f",
                labelcolor="#ccccdc",
                framealpha=0.6,
                edgecolor="#2c3235",
            )
            ax.grid(color="#2c3235", lw=0.5)
        elif p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            n = len(series)
            for i, (name, res) in enumerate(sorted(series)):
                v = float(res["value"][1])
                x0 = i / n
                ax.add_patch(
                    plt.Rectangle(
                        (x0 + 0.01, 0.05),
                        1 / n - 0.02,
                        0.78,
                        color=_colour(v, steps),
                        transform=ax.transAxes,
                    )
                )
                ax.text(
                    x0 + 0.5 / n,
                    0.5,
                    _fmt(v, unit),
                    color="white",
                    ha="center",
                    va="center",
                    fontsize=15,
                    weight="bold",
                    transform=ax.transAxes,
                )
                ax.text(
                    x0 + 0.5 / n,
                    0.15,
                    name,
                    color="white",
                    ha="center",
                    fontsize=8,
                    transform=ax.transAxes,
                )
        elif p["type"] == "bargauge":
            items = sorted(((n, float(r["value"][1])) for n, r in series), key=lambda x: x[1])
            names = [n for n, _ in items]
            vals = [v for _, v in items]
            ax.barh(names, vals, color=COLOURS["green"])
            for y, v in enumerate(vals):
                ax.text(v, y, " " + _fmt(v, unit), color="#ccccdc", va="center", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
        elif p["type"] == "table":
            ax.set_xticks([])
            ax.set_yticks([])
            rows_ = sorted(
                (
                    (
                        r["metric"].get("kind", ""),
                        r["metric"].get("entity", ""),
                        float(r["value"][1]),
                    )
                    for _, r in series
                ),
                key=lambda x: -x[2],
            )[:10]
            tab = ax.table(
                cellText=[[k, e, f"{v:,.0f}"] for k, e, v in rows_],
                colLabels=["kind", "entity", "weight"],
                loc="upper center",
                cellLoc="left",
                colWidths=[0.42, 0.4, 0.18],
            )
            tab.auto_set_font_size(False)
            tab.set_fontsize(7)
            for cell in tab.get_celld().values():
                cell.set_facecolor("#181b1f")
                cell.set_edgecolor("#2c3235")
                cell.get_text().set_color("#ccccdc")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor=fig.get_facecolor())
    print(out)


def main() -> int:
    """Start Prometheus and the demo, wait for the replay, render, stop both."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("overview.png")))
    ap.add_argument("--speed", default="40000")
    args = ap.parse_args()
    prom_bin = shutil.which("prometheus")
    if prom_bin is None:
        print("install the Debian package 'prometheus'", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vigil-overview-"))
    mport, pport = _port(), _port()
    cfg = {
        "global": {"scrape_interval": "2s"},
        "scrape_configs": [
            {"job_name": VIGIL_JOB, "static_configs": [{"targets": [f"127.0.0.1:{mport}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen(
        [
            prom_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{pport}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    start = time.time()
    log = open(work / "demo.log", "wb")  # noqa: SIM115 - closed below
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vigil.flows.cli",
            "demo",
            "--follow",
            "--speed",
            args.speed,
            "--metrics-port",
            str(mport),
            "--out",
            str(work / "out"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while b"replay finished" not in (work / "demo.log").read_bytes():
            if demo.poll() is not None or time.monotonic() > deadline:
                print((work / "demo.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(1)
        time.sleep(6)
        render(f"http://127.0.0.1:{pport}", start, time.time(), Path(args.out))
    finally:
        for proc in (demo, prom):
            proc.terminate()
            proc.wait(timeout=20)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
