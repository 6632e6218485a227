"""Small HTML helpers: escaping, the page shell, tables, money cells. Pages are rendered on the server;
charts are drawn in the browser by `static/app.js` from a JSON block in the page (`chart_specs`).

Every figure a test or a reader may compare with the CLI's `--json` carries its exact value in a
`data-v` attribute beside the rounded text shown."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from html import escape
from importlib import resources
from typing import Any

from mcp_prism.core.report import money

NAV = (("costs", "/costs", "Costs"), ("matrix", "/matrix", "Matrix"), ("experiments", "/experiments", "Experiments"),
       ("rules", "/rules", "Rules"))


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def static_text(name: str) -> str:
    return resources.files("mcp_prism.ui").joinpath("static", name).read_text(encoding="utf-8")


def usd(value: Decimal | None, *, test_id: str | None = None) -> str:
    """Money shown rounded, exact in data-v (the string the CLI's --json prints)."""
    tid = f' data-testid="{e(test_id)}"' if test_id else ""
    raw = "" if value is None else str(value)
    return f'<span class="usd"{tid} data-v="{e(raw)}">{e(money(value))}</span>'


def num(value: Any, text: str | None = None, *, test_id: str | None = None) -> str:
    tid = f' data-testid="{e(test_id)}"' if test_id else ""
    raw = "" if value is None else str(value)
    shown = text if text is not None else ("-" if value is None else (f"{value:,}" if isinstance(value, int)
                                                                      else str(value)))
    return f'<span class="num"{tid} data-v="{e(raw)}">{e(shown)}</span>'


def pct(value: float | None, places: int = 1) -> str:
    return num(value, "-" if value is None else f"{value:.{places}f}%")


def share(value: float | None) -> str:
    """A 0..1 share shown as a percentage."""
    return num(value, "-" if value is None else f"{value * 100:.1f}%")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, test_id: str = "", empty: str = "nothing yet",
          raw_headers: bool = False) -> str:
    """`rows` cells are HTML already (escape text with `e`)."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    if not body:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{h if raw_headers else e(h)}</th>" for h in headers)
    tid = f' data-testid="{e(test_id)}"' if test_id else ""
    return f'<table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """(label, value html, test id) tiles."""
    return '<div class="cards">' + "".join(
        f'<div class="card" data-testid="{e(t)}"><div class="label">{e(label)}</div><div class="value">{v}</div></div>'
        for label, v, t in items) + "</div>"


def chart(chart_id: str, title: str) -> str:
    return (f'<figure class="chart"><figcaption>{e(title)}</figcaption>'
            f'<div class="canvas-box"><canvas id="{e(chart_id)}"></canvas></div></figure>')


def _json_block(data: Any) -> str:
    # </script> inside a string must not end the block: escape '<' (JSON allows \u003c).
    text = json.dumps(data, default=str).replace("<", "\\u003c")
    return f'<script type="application/json" id="chart-data">{text}</script>'


def page(title: str, body: str, *, active: str = "", charts: Sequence[dict[str, Any]] = (), inline: bool = False,
         nav: bool = True, scripts: Sequence[str] = ("app.js",), note: str = "") -> str:
    """The whole document. `inline`: styles and scripts inside the file (the HTML report: no network, no server)."""
    links = "".join(f'<a href="{href}" class="{"on" if key == active else ""}">{e(label)}</a>'
                    for key, href, label in NAV) if nav else ""
    needs_chart = bool(charts)
    if inline:
        head = f"<style>{static_text('style.css')}</style>"
        js = (f"<script>{static_text('chart.umd.min.js')}</script>" if needs_chart else "") + "".join(
            f"<script>{static_text(s)}</script>" for s in scripts)
    else:
        head = '<link rel="stylesheet" href="/static/style.css">'
        js = ('<script src="/static/chart.umd.min.js"></script>' if needs_chart else "") + "".join(
            f'<script src="/static/{s}"></script>' for s in scripts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · mcp-prism</title>{head}</head><body>'
            f'<header><span class="brand">mcp-prism</span><nav>{links}</nav>'
            f'<span class="note">{e(note)}</span></header>'
            f'<main><h1>{e(title)}</h1>{body}</main>{_json_block(list(charts))}{js}</body></html>')
