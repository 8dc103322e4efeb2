"""The public scorecard site (flows/queues/site*.py), as a user and a citizen meet it.

``vigil scorecard build`` and ``vigil scorecard serve`` run in a subprocess on the Boston
311 data with the shipped example; their figures are checked against what
``vigil report service-queues`` prints for the same period, first in the JSON and CSV,
then in a real browser (Debian's ``chromium`` driven by Playwright, no JavaScript), on the
built files and on the served pages. The browser test saves a screenshot (to
``docs/scorecard.png`` with ``VIGIL_UPDATE_SCREENSHOT=1``).

Median and 90th-percentile times are exact (nearest rank), so they are compared exactly,
and the biggest agency's against quantiles computed here from its completions.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from vigil.flows.queues.site_i18n import fmt_dec, fmt_int

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "service_queues"
BOSTON = DATA / "boston_311_2015q1" / "boston_311_2015Q1.csv"
VIGIL = [sys.executable, "-m", "vigil.flows.cli"]
NY = ZoneInfo("America/New_York")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name, never fetched

boston = pytest.mark.skipif(not BOSTON.exists(), reason="../shared/datasets not present")


def vigil(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scorecard")


@pytest.fixture(scope="module")
def boston_cfg(work: Path) -> Path:
    raw = yaml.safe_load((ROOT / "examples" / "boston311.yaml").read_text())
    raw["service_queues"]["inputs"][0]["paths"] = [str(BOSTON)]
    p = work / "boston.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="module")
def report(boston_cfg: Path, work: Path) -> tuple[str, list[dict[str, Any]]]:
    """What ``vigil report service-queues`` prints for February 2015, and its JSON rows."""
    out = work / "report.json"
    r = vigil(
        "report", "service-queues", "--config", str(boston_cfg),
        "--from", "2015-02-01", "--to", "2015-03-01", "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(out.read_text())["rows"]


@pytest.fixture(scope="module")
def site(boston_cfg: Path, work: Path) -> Path:
    out = work / "site"
    r = vigil("scorecard", "build", "--config", str(boston_cfg), "--out", str(out),
              "--period", "2015-02")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "agency pages" in r.stdout
    return out


def _printed_agencies(stdout: str) -> dict[str, dict[str, str]]:
    """The report's agency lines, cut at the header's column ends (numbers right-aligned)."""
    lines = stdout.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("agency"))
    head = lines[i]
    cols = ["received", "completed", "on time", "median h", "p90 h", "backlog", "overdue"]
    ends = {c: head.index(c) + len(c) for c in cols if c in head}
    svc_at = head.index("service")
    out = {}
    for ln in lines[i + 2 :]:
        if not ln.strip():
            break
        if ln[svc_at:].split("  ")[0].strip() != "(all)":
            continue
        agency = ln[:svc_at].strip()
        prev_end = head.index("received") - 1
        vals: dict[str, str] = {}
        for c in cols:
            if c in ends:
                vals[c] = ln[prev_end : ends[c]].strip()
                prev_end = ends[c]
        out[agency] = vals
    return out


def _vi(col: str, printed: str) -> set[str]:
    """How the site (in Vietnamese) writes a value the report printed."""
    if printed in ("-", "no deadline"):
        return {"—", "không có hạn"}
    if col == "on time":
        return {fmt_dec(float(printed.rstrip("%")), "vi")}
    if col in ("median h", "p90 h"):
        return {fmt_dec(float(printed), "vi")}
    return {fmt_int(int(printed), "vi")}


SITE_COL = {  # report column -> index of the cell after the row header on the site
    "received": 0,
    "completed": 1,
    "on time": 2,
    "overdue": 3,
    "backlog": 4,
    "median h": 5,
    "p90 h": 6,
}


def _exact_quantiles(cfg_path: Path, agency: str) -> list[float]:
    """Processing hours of an agency's February completions, sorted (independent of KLL)."""
    from vigil.flows.config import load_config
    from vigil.flows.queues.cli import load_events
    from vigil.flows.queues.records import CLOSED, QueueEvent

    start = datetime(2015, 2, 1, tzinfo=NY).timestamp()
    end = datetime(2015, 3, 1, tzinfo=NY).timestamp()
    hours = [
        max(e.ts - e.received, 0.0) / 3600
        for e in load_events(load_config(cfg_path).service_queues)
        if type(e) is QueueEvent and e.kind == CLOSED and e.agency == agency
        if start <= e.ts < end and e.received is not None
    ]
    return sorted(hours)


def _nearest_rank_hours(hours: list[float], q: float) -> float:
    return round(hours[max(0, -(-int(q * 1000) * len(hours) // 1000) - 1)], 2)


# --- figures: JSON and CSV against the report ---------------------------------------------


@boston
def test_json_and_csv_figures_equal_the_report(
    site: Path, report: tuple[str, list[dict[str, Any]]], boston_cfg: Path
) -> None:
    _stdout, rep = report
    doc = json.loads((site / "scorecard.json").read_text(encoding="utf-8"))
    mine = {(r["agency"], r["service"]): r for r in doc["rows"]}
    assert set(mine) == {(r["agency"], r["service"]) for r in rep}
    for r in rep:
        s = mine[(r["agency"], r["service"])]
        for k in ("received", "completed", "on_time_pct", "backlog", "overdue_now"):
            assert s[k] == r[k], (r["agency"], r["service"], k)
        assert (s["median_hours"], s["p90_hours"]) == (r["median_hours"], r["p90_hours"])
    # The biggest agency's times against exact quantiles of its completions.
    pwd = mine[("PWDx", "(all)")]
    hours = _exact_quantiles(boston_cfg, "PWDx")
    assert len(hours) == pwd["completed"] == 3058
    assert pwd["median_hours"] == _nearest_rank_hours(hours, 0.5)
    assert pwd["p90_hours"] == _nearest_rank_hours(hours, 0.9)
    # CSV: the same rows, the same figures.
    with (site / "scorecard.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["rows"])
    for c, j in zip(rows, doc["rows"], strict=True):
        assert {k: ("" if v is None else str(v)) for k, v in j.items()} == c
    # One page (and JSON) per agency, holding its services.
    assert len(list((site / "agency").glob("*.html"))) == len({r["agency"] for r in rep})
    isd = json.loads((site / "agency" / "ISD.json").read_text(encoding="utf-8"))
    assert {r["service"] for r in isd["rows"]} == {
        r["service"] for r in rep if r["agency"] == "ISD"
    }


@boston
def test_trend_is_against_the_previous_period_of_the_same_length(
    site: Path, boston_cfg: Path, work: Path
) -> None:
    out = work / "prev.json"
    r = vigil("report", "service-queues", "--config", str(boston_cfg), "--from", "2015-01-04",
              "--to", "2015-02-01", "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    prev = {(x["agency"], x["service"]): x for x in json.loads(out.read_text())["rows"]}
    doc = json.loads((site / "scorecard.json").read_text(encoding="utf-8"))
    assert doc["previous_period"]["start"] == "2015-01-04T00:00:00-05:00"
    pwd = next(x for x in doc["rows"] if (x["agency"], x["service"]) == ("PWDx", "(all)"))
    p = prev[("PWDx", "(all)")]
    assert (pwd["prev_received"], pwd["prev_on_time_pct"]) == (p["received"], p["on_time_pct"])
    assert pwd["received_change_pct"] == round(100 * (3979 - p["received"]) / p["received"], 1)


# --- what the pages promise a citizen ----------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.th_without_scope = 0
        self.ths = 0
        self.tables = 0
        self.captions = 0
        self.urls: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "th":
            self.ths += 1
            self.th_without_scope += a.get("scope") not in ("col", "row")
        self.tables += tag == "table"
        self.captions += tag == "caption"
        self.scripts += tag == "script"
        for k in ("href", "src", "xmlns", "action"):
            if a.get(k):
                self.urls.append(str(a[k]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _pages(site: Path) -> Iterator[tuple[Path, _Page, str]]:
    for p in sorted(site.rglob("*.html")):
        html = p.read_text(encoding="utf-8")
        page = _Page()
        page.feed(html)
        yield p, page, html


@boston
def test_pages_are_accessible_self_contained_and_in_vietnamese(site: Path) -> None:
    n = 0
    for p, page, html in _pages(site):
        n += 1
        assert page.lang == "vi", p
        assert page.ths > 0 and page.th_without_scope == 0, p
        assert page.tables == page.captions >= 1, p
        assert page.scripts == 0, p
        assert not re.search(r"\son[a-z]+\s*=", html), p  # no inline handlers either
        external = [u for u in page.urls if re.match(r"[a-z]+:|//", u) and u != SVG_NS]
        assert external == [], p
        assert "@import" not in html and "url(" not in html, p
        assert 'name="viewport"' in html and "@media" in html, p
        assert "<svg" in html and 'role="img"' in html, p
    assert n == 1 + len(list((site / "agency").glob("*.html")))
    text = " ".join(_text(site / "index.html"))
    for word in ("Cơ quan", "Tiếp nhận", "Đã giải quyết", "Đúng hạn", "Quá hạn hiện tại",
                 "Tồn đọng", "Trung vị", "So với kỳ trước", "không có hạn"):  # fmt: skip
        assert word in text, word


def _text(path: Path) -> list[str]:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page.text


@boston
def test_no_request_id_reaches_the_site(site: Path) -> None:
    with BOSTON.open(encoding="utf-8") as f:
        ids = {row["case_enquiry_id"] for row in csv.DictReader(f)}
    assert len(ids) == 26_788
    blob = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*") if p.is_file())
    found = set(re.findall(r"\d{9,}", blob))
    assert not (found & ids)
    assert not re.search(r"\b[0-9a-f]{16,}\b", blob)  # nor the salted hashes


@boston
def test_english_site(boston_cfg: Path, work: Path) -> None:
    out = work / "site_en"
    r = vigil("scorecard", "build", "--config", str(boston_cfg), "--out", str(out),
              "--period", "2015-02", "--lang", "en")  # fmt: skip
    assert r.returncode == 0, r.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in html
    assert ">Agency<" in html and ">Overdue now<" in html and "3,979" in html


# --- small made-up inputs: honesty, escaping, live serving, mistakes ----------------------

HEADER = "id,dept,kind,opened,closed\n"


def _tiny(tmp_path: Path, rows: str) -> Path:
    data = tmp_path / "cases.csv"
    data.write_text(HEADER + rows, encoding="utf-8")
    cfg = {
        "service_queues": {
            "inputs": [{
                "kind": "replay", "paths": [str(data)], "format": "csv",
                "mapping": {"id": "id", "agency": "dept", "service": "kind",
                            "received_at": "opened", "closed_at": "closed"},
            }],
            "calendar": {"timezone": "Asia/Ho_Chi_Minh"},
        }
    }  # fmt: skip
    p = tmp_path / "vigil.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


ROWS = (
    'A1,Sở <b>Xây dựng</b> & "Nhà",Cấp phép,2026-11-02T08:00:00,2026-11-03T09:00:00\n'
    'A2,Sở <b>Xây dựng</b> & "Nhà",Cấp phép,2026-11-02T09:00:00,\n'
    "A3,UBND Phường,Hộ tịch,2026-11-03T10:00:00,2026-11-03T15:00:00\n"
)


def test_no_deadline_means_no_on_time_claim_and_text_is_escaped(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ROWS)
    r = vigil("scorecard", "build", "--config", str(cfg), "--out", str(tmp_path / "s"),
              "--period", "2026-11")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "s" / "scorecard.json").read_text(encoding="utf-8"))
    totals = {x["agency"]: x for x in doc["rows"] if x["service"] == "(all)"}
    sxd = totals['Sở <b>Xây dựng</b> & "Nhà"']
    assert (sxd["received"], sxd["completed"], sxd["backlog"]) == (2, 1, 1)
    assert sxd["on_time_pct"] is None and totals["UBND Phường"]["on_time_pct"] is None
    html = (tmp_path / "s" / "index.html").read_text(encoding="utf-8")
    assert "<b>" not in html and "Sở &lt;b&gt;Xây dựng&lt;/b&gt; &amp; &quot;Nhà&quot;" in html
    assert "không có hạn" in html and "100,0" not in html


class Served:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*VIGIL, "scorecard", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://[\d.]+:\d+/", line)
        assert m, (line, self.proc.stderr.read() if self.proc.stderr else "")
        self.url = m[0]

    def get(self, path: str) -> bytes:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=60) as resp:
            return bytes(resp.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=20)


def test_serve_recomputes_as_records_arrive(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ROWS)
    srv = Served("--config", str(cfg), "--refresh", "0", "--period", "2026-11")
    try:

        def received() -> int:
            doc = json.loads(srv.get("scorecard.json"))
            return sum(x["received"] for x in doc["rows"] if x["service"] == "(all)")

        assert received() == 3
        with (tmp_path / "cases.csv").open("a", encoding="utf-8") as f:
            f.write("A4,UBND Phường,Hộ tịch,2026-11-04T10:00:00,\n")
        assert received() == 4
        assert "UBND Phường" in srv.get("").decode()
        with pytest.raises(Exception, match="404"):
            srv.get("nothing.html")
    finally:
        srv.close()


def test_user_mistakes_are_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, ROWS)
    r = vigil("scorecard", "build", "--config", str(tmp_path / "missing.yaml"), "--out", "x")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "missing.yaml" in r.stderr and "Traceback" not in r.stderr
    r = vigil("scorecard", "build", "--config", str(cfg), "--out", "x", "--period", "2026-13")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "vigil scorecard: --period month must be 01-12, got '2026-13'"
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = vigil("scorecard", "serve", "--config", str(cfg), "--port", str(port))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"vigil scorecard: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


# --- in a real browser --------------------------------------------------------------------


def _browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return sync_playwright()


def _table(page: Any) -> dict[str, list[str]]:
    rows = page.locator("table#data tbody tr")
    out = {}
    for i in range(rows.count()):
        tr = rows.nth(i)
        out[tr.locator("th").inner_text().strip()] = [
            t.strip() for t in tr.locator("td").all_inner_texts()
        ]
    return out


def _check_agencies(
    page: Any, printed: dict[str, dict[str, str]], rep: list[dict[str, Any]]
) -> None:
    shown = {k[:14]: v for k, v in _table(page).items()}  # the report cuts names at 14
    assert set(shown) == set(printed)
    for agency, vals in printed.items():
        for col, text in vals.items():
            assert shown[agency][SITE_COL[col]] in _vi(col, text), (agency, col, text)


@boston
def test_in_a_browser_built_and_served(
    site: Path, boston_cfg: Path, report: tuple[str, list[dict[str, Any]]]
) -> None:
    stdout, rep = report
    printed = _printed_agencies(stdout)
    assert len(printed) >= 11 and "PWDx" in printed
    playwright = _browser()
    srv = Served("--config", str(boston_cfg), "--period", "2015-02")
    with playwright as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(
                java_script_enabled=False, viewport={"width": 1100, "height": 1300}
            )
            page = ctx.new_page()
            # The built files, from disk.
            page.goto((site / "index.html").as_uri())
            assert page.locator("html").get_attribute("lang") == "vi"
            _check_agencies(page, printed, rep)
            update = os.environ.get("VIGIL_UPDATE_SCREENSHOT")
            shot = ROOT / "docs" / "scorecard.png" if update else site.parent / "scorecard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 20_000
            # Every agency's page, reached by its link: its total row equals the report.
            for agency, vals in printed.items():
                page.goto((site / "index.html").as_uri())
                page.get_by_role("link", name=agency, exact=True).click()
                assert page.locator("h1").inner_text().endswith(agency)
                total = _table(page)["Tất cả dịch vụ"]
                assert total[SITE_COL["received"]] == fmt_int(int(vals["received"]), "vi")
                assert total[SITE_COL["completed"]] == fmt_int(int(vals["completed"]), "vi")
            # The served pages: the same figures.
            page.goto(srv.url)
            _check_agencies(page, printed, rep)
            # On a phone: the page itself does not scroll sideways; the table region does.
            phone = browser.new_context(
                java_script_enabled=False, viewport={"width": 390, "height": 800}
            )
            p2 = phone.new_page()
            p2.goto(srv.url)
            width = p2.evaluate("document.documentElement.scrollWidth")
            assert width <= 390
            region = p2.locator("div.scroll[role=region]").first
            assert region.evaluate("e => e.scrollWidth > e.clientWidth")
        finally:
            browser.close()
            srv.close()
