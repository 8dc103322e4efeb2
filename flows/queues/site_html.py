"""HTML of the public scorecard site (figures: flows/queues/site.py; words: site_i18n.py).

Plain string templates from the standard library: a page is a few tables and two bar
charts, which a template engine would not make clearer. Every piece of data goes through
:func:`html.escape`; the pages carry no script, no external URL and no font download
(system font stack), so they work offline, without JavaScript and under a strict
``Content-Security-Policy``.

Accessibility: ``<html lang>``, a skip link, tables with ``<caption>`` and
``<th scope="col|row">``, each wide table inside a focusable, labelled scrolling region
(the usual pattern for phones; stacking cells would lose the table semantics), text
colours at 7:1 or more against their background (WCAG AAA for text, AA for the bars), and
charts as ``role="img"`` SVG with a title, whose figures are also in the table below.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from vigil.flows.queues.cli import ALL_SERVICES
from vigil.flows.queues.site_i18n import DASH, T, fmt_dec, fmt_int, fmt_signed

if TYPE_CHECKING:
    from vigil.flows.queues.site import Period, SiteRow

CSS = """
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;
line-height:1.5;color:#1b1b1b;background:#fff}
.skip{position:absolute;left:-9999px}
.skip:focus{left:1rem;top:1rem;background:#fff;color:#0a4b8c;padding:.5rem;z-index:2}
header{background:#0b3d6e;color:#fff;padding:1rem}
header .in,main,footer{max-width:72rem;margin:0 auto}
header a{color:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem;line-height:1.25}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
.sub{margin:0}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:.75rem 0 0}
.meta dt{font-weight:600}
.meta dd{margin:0}
main{padding:1rem}
.scroll{overflow-x:auto;border:1px solid #c5cdd8;border-radius:4px}
.scroll:focus{outline:3px solid #0a4b8c;outline-offset:2px}
table{border-collapse:collapse;width:100%;min-width:46rem;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.5rem .6rem;position:sticky;left:0;
max-width:calc(100vw - 2.5rem)}
th,td{padding:.45rem .6rem;border-top:1px solid #d6dce4;text-align:right;vertical-align:top}
thead th{background:#e8eef5;font-weight:600;vertical-align:bottom}
thead th:first-child,tbody th{text-align:left}
tbody th{position:sticky;left:0;background:#fff;font-weight:600}
tbody tr:nth-child(even),tbody tr:nth-child(even) th{background:#f4f6f9}
tr.total th,tr.total td{font-weight:700}
a{color:#0a4b8c}
a:focus,summary:focus{outline:3px solid #8a4500;outline-offset:2px}
.nodl{color:#454545;font-style:italic;white-space:nowrap}
.trend{font-size:.9rem;white-space:nowrap}
figure{margin:0}
svg{display:block;width:100%;max-width:46rem;height:auto}
.notes li{margin:.25rem 0}
footer{padding:1rem;color:#454545;font-size:.9rem}
@media (max-width:40rem){h1{font-size:1.25rem}main{padding:.5rem}
.meta{grid-template-columns:1fr}.meta dd{margin:0 0 .4rem}}
"""


def _date(ts: float, tz: str, lang: str, *, with_time: bool = False) -> str:
    dt = datetime.fromtimestamp(ts, ZoneInfo(tz))
    if lang == "vi":
        s = dt.strftime("%d/%m/%Y")
        return f"{dt:%H:%M} {s}" if with_time else s
    return dt.strftime("%Y-%m-%d %H:%M") if with_time else dt.strftime("%Y-%m-%d")


def _period_text(p: Period, lang: str) -> str:
    return T[lang]["from_to"].format(
        start=_date(p.start, p.tz, lang), last=_date(p.end - 1, p.tz, lang)
    )


def _service_name(name: str, lang: str) -> str:
    return T[lang]["all_services"] if name == ALL_SERVICES else name


def _on_time_cell(r: SiteRow, lang: str) -> str:
    if r.on_time_pct is None and not r.completed:
        return f"<td>{DASH}</td>"  # nothing completed: no share to give
    if r.on_time_pct is None:
        return f'<td><span class="nodl">{escape(T[lang]["no_deadline"])}</span></td>'
    return f"<td>{fmt_dec(r.on_time_pct, lang)}</td>"


def _overdue_cell(r: SiteRow, lang: str) -> str:
    if r.overdue_now is None and r.backlog:
        return f'<td><span class="nodl">{escape(T[lang]["no_deadline"])}</span></td>'
    return f"<td>{fmt_int(r.overdue_now or 0, lang)}</td>"


def _trend_cell(r: SiteRow, lang: str) -> str:
    t = T[lang]
    parts = []
    if r.received_change_pct is not None:
        x = r.received_change_pct
        arrow = "▲" if x > 0 else "▼" if x < 0 else "="
        parts.append(
            f'{escape(t["received"])} <span aria-hidden="true">{arrow}</span> '
            f"{fmt_signed(x, lang)}\u00a0%"
        )
    elif r.received:
        parts.append(f"{escape(t['received'])}: {escape(t['new'])}")
    if r.on_time_change_points is not None:
        x = r.on_time_change_points
        arrow = "▲" if x > 0 else "▼" if x < 0 else "="
        parts.append(
            f'{escape(t["on_time"])} <span aria-hidden="true">{arrow}</span> '
            f"{fmt_signed(x, lang)} {escape(t['points'])}"
        )
    return f'<td class="trend">{"<br>".join(parts) or DASH}</td>'


def _cells(r: SiteRow, lang: str) -> str:
    return (
        f"<td>{fmt_int(r.received, lang)}</td><td>{fmt_int(r.completed, lang)}</td>"
        f"{_on_time_cell(r, lang)}{_overdue_cell(r, lang)}"
        f"<td>{fmt_int(r.backlog, lang)}</td><td>{fmt_dec(r.median_hours, lang)}</td>"
        f"<td>{fmt_dec(r.p90_hours, lang)}</td>{_trend_cell(r, lang)}"
    )


def _thead(first: str, lang: str) -> str:
    t = T[lang]
    cols = [first, "received", "completed", "on_time_pct", "overdue", "backlog", "median"]
    cols += ["p90", "trend"]
    return (
        "<thead><tr>"
        + "".join(f'<th scope="col">{escape(t[c])}</th>' for c in cols)
        + ("</tr></thead>")
    )


def bar_chart(
    items: Sequence[tuple[str, float | None, str]], top: float, title: str, cid: str, lang: str
) -> str:
    """A horizontal bar chart as inline SVG: ``(label, value or None, value text)`` rows.

    >>> svg = bar_chart([("A&B", 50.0, "50"), ("C", None, "—")], 100, "T", "c1", "en")
    >>> "A&amp;B" in svg and 'role="img"' in svg and "<script" not in svg
    True
    """
    row_h, label_w, bar_w, width = 30, 170, 330, 600
    height = row_h * len(items) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{cid}-t" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'font-family="system-ui,sans-serif" font-size="14">',
        f'<title id="{cid}-t">{escape(title)}</title>',
    ]
    for i, (label, value, text) in enumerate(items):
        y = 5 + i * row_h
        short = label if len(label) <= 22 else label[:21] + "…"
        out.append(
            f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end" fill="#1b1b1b">'
            f"{escape(short)}</text>"
        )
        if value is None:
            out.append(
                f'<text x="{label_w}" y="{y + 19}" fill="#454545" font-style="italic">'
                f"{escape(text)}</text>"
            )
            continue
        w = 0.0 if top <= 0 else max(bar_w * value / top, 1.0 if value > 0 else 0.0)
        out.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 10}" '
            'fill="#1d5a9a"/>'
        )
        out.append(
            f'<text x="{label_w + w + 6:.1f}" y="{y + 19}" fill="#1b1b1b">{escape(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _page(lang: str, title: str, header: str, body: str) -> str:
    t = T[lang]
    return f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<a class="skip" href="#data">{escape(t["skip"])}</a>
<header><div class="in">{header}</div></header>
<main>
{body}
</main>
<footer><p>{escape(t["note_privacy"])}</p></footer>
</body>
</html>
"""


def _meta(period: Period, as_of: float, lang: str) -> str:
    t = T[lang]
    rows = [
        (t["period"], _period_text(period, lang)),
        (t["prev_period"], _period_text(period.previous(), lang)),
        (t["as_of"], _date(as_of, period.tz, lang, with_time=True)),
        (t["timezone"], period.tz),
    ]
    return (
        '<dl class="meta">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
        + "</dl>"
    )


def _notes(lang: str) -> str:
    t = T[lang]
    keys = ["note_received", "note_completed", "note_on_time", "note_backlog"]
    keys += ["note_time", "note_trend"]
    items = "".join(f"<li>{escape(t[k])}</li>" for k in keys)
    return f'<section class="notes"><h2>{escape(t["notes"])}</h2><ul>{items}</ul></section>'


def _downloads(base: str, lang: str) -> str:
    t = T[lang]
    return (
        f'<p>{escape(t["downloads"])}: <a href="{escape(base)}.json">{t["json"]}</a> · '
        f'<a href="{escape(base)}.csv">{t["csv"]}</a></p>'
    )


def _on_time_items(
    rows: Sequence[SiteRow], label: str, lang: str
) -> list[tuple[str, float | None, str]]:
    t = T[lang]
    out: list[tuple[str, float | None, str]] = []
    for r in rows:
        name = getattr(r, label) if label == "agency" else _service_name(r.service, lang)
        if r.on_time_pct is None:
            out.append((name, None, t["no_deadline"] if r.completed else DASH))
        else:
            out.append((name, r.on_time_pct, fmt_dec(r.on_time_pct, lang) + "\u00a0%"))
    return out


def index_page(
    rows: Sequence[SiteRow], period: Period, as_of: float, lang: str, slug: dict[str, str]
) -> str:
    """The home page: one row per agency (its all-services total), and two charts."""
    t = T[lang]
    totals = [r for r in rows if r.service == ALL_SERVICES]
    ptext = _period_text(period, lang)
    header = f'<h1>{escape(t["title"])}</h1><p class="sub">{escape(t["subtitle"])}</p>' + _meta(
        period, as_of, lang
    )
    body_rows = "".join(
        f'<tr><th scope="row"><a href="agency/{escape(slug[r.agency])}.html">'
        f"{escape(r.agency)}</a></th>{_cells(r, lang)}</tr>"
        for r in totals
    )
    table = (
        f'<div class="scroll" role="region" aria-labelledby="cap" tabindex="0">'
        f'<table id="data"><caption id="cap">'
        f"{escape(t['caption_index'].format(period=ptext))}</caption>"
        f"{_thead('agency', lang)}<tbody>{body_rows}</tbody></table></div>"
    )
    top_backlog = max((r.backlog for r in totals), default=0)
    charts = (
        f'<section aria-labelledby="h-ot"><h2 id="h-ot">{escape(t["chart_on_time"])}</h2>'
        "<figure>"
        + bar_chart(_on_time_items(totals, "agency", lang), 100.0, t["chart_on_time"], "c-ot", lang)
        + "</figure></section>"
        f'<section aria-labelledby="h-bl"><h2 id="h-bl">{escape(t["chart_backlog"])}</h2>'
        "<figure>"
        + bar_chart(
            [(r.agency, float(r.backlog), fmt_int(r.backlog, lang)) for r in totals],
            float(top_backlog),
            t["chart_backlog"],
            "c-bl",
            lang,
        )
        + "</figure></section>"
    )
    body = (
        f'<section aria-labelledby="h-ag"><h2 id="h-ag">{escape(t["agencies"])}</h2>'
        f"{table}{_downloads('scorecard', lang)}</section>{charts}{_notes(lang)}"
    )
    return _page(lang, t["title"], header, body)


def agency_page(rows: Sequence[SiteRow], period: Period, as_of: float, lang: str, slug: str) -> str:
    """One agency's page: its total first, then a row per service, and a chart."""
    t = T[lang]
    agency = rows[0].agency
    ptext = _period_text(period, lang)
    title = f"{agency} · {t['title']}"
    header = (
        f'<p class="sub"><a href="../index.html">{escape(t["back"])}</a></p>'
        f"<h1>{escape(t['agency'])}: {escape(agency)}</h1>" + _meta(period, as_of, lang)
    )
    body_rows = "".join(
        ('<tr class="total">' if r.service == ALL_SERVICES else "<tr>")
        + f'<th scope="row">{escape(_service_name(r.service, lang))}</th>{_cells(r, lang)}</tr>'
        for r in rows
    )
    table = (
        f'<div class="scroll" role="region" aria-labelledby="cap" tabindex="0">'
        f'<table id="data"><caption id="cap">'
        f"{escape(t['caption_agency'].format(agency=agency, period=ptext))}</caption>"
        f"{_thead('service', lang)}<tbody>{body_rows}</tbody></table></div>"
    )
    services = [r for r in rows if r.service != ALL_SERVICES]
    chart = (
        f'<section aria-labelledby="h-ot"><h2 id="h-ot">{escape(t["chart_on_time_services"])}</h2>'
        "<figure>"
        + bar_chart(
            _on_time_items(services, "service", lang),
            100.0,
            t["chart_on_time_services"],
            "c-ot",
            lang,
        )
        + "</figure></section>"
    )
    body = (
        f'<section aria-labelledby="h-sv"><h2 id="h-sv">'
        f"{escape(t['services_count'].format(n=len(services)))}</h2>"
        f"{table}{_downloads(slug, lang)}</section>{chart}{_notes(lang)}"
    )
    return _page(lang, title, header, body)
