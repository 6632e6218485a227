"""The shipped Grafana dashboard: importable JSON, and every query it runs names a series (and labels) the
gateway's `/metrics` actually exposes, so a renamed metric or label fails here rather than as an empty panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from mcp_prism.gateway.metrics import Metrics

REQUIRED_KEYS = {"__inputs", "panels", "templating", "schemaVersion", "title", "uid", "time", "annotations"}
FILTER_VARIABLES = {"team": "team", "task_type": "task_type", "provider": "gen_ai_provider_name",
                    "model": "gen_ai_response_model"}
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms", "__interval_ms"}
UNITS = {"reqps", "percentunit", "currencyUSD", "s", "short", "none"}

IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left (...)`, `group_right (...)`
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(rf"({IDENT})\s*\{{([^}}]*)\}}")
MATCHER_NAME = re.compile(rf"({IDENT})\s*(?:=~|!~|!=|=)")
METRIC_NAME = re.compile(rf"(?<![a-zA-Z0-9_:])({IDENT})\s*(?=[{{\[)]|$)")
LABEL_VALUES = re.compile(rf"^label_values\(\s*({IDENT})\s*(\{{[^}}]*\}})?\s*,\s*({IDENT})\s*\)$")


def load_dashboard() -> dict[str, Any]:
    return json.loads(files("mcp_prism").joinpath("data/grafana-dashboard.json").read_text(encoding="utf-8"))


@cache
def exposed() -> dict[str, frozenset[str]]:
    """Series name -> label names, as a fresh `Metrics()` would expose them once every metric has been observed."""
    m = Metrics()
    for metric in vars(m).values():  # give each labelled metric one child so its samples (and `le`) show up
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))
    series: dict[str, set[str]] = {}
    for family in m.registry.collect():
        names = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                 "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}.get(family.type, ("",))
        for suffix in names:  # what the family's type says it exposes, even before any observation
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def targets(dash: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in all_panels(dash["panels"]):
        for t in p.get("targets", []):
            yield p["title"], t


def exprs() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query in the dashboard."""
    return [(title, t["refId"], t["expr"]) for title, t in targets(load_dashboard())]


def expr_params() -> list[Any]:
    return [pytest.param(title, ref, expr, id=f"{title}/{ref}") for title, ref, expr in exprs()]


def metric_names(expr: str) -> set[str]:
    """The gateway's series named in a PromQL expression (identifiers before `{`, `[` or `)`)."""
    bare = STRING.sub('""', expr)
    bare = GROUPING.sub(r"\1 ()", bare)  # label names in `by (...)` are not metrics
    bare = re.sub(r"\{[^}]*\}", "{}", bare)  # nor are label names in matchers
    return {n for n in METRIC_NAME.findall(bare) if n.startswith(("gen_ai_", "prism_"))}


def grouping_labels(expr: str) -> set[str]:
    bare = STRING.sub('""', expr)
    return {label.strip() for _, inside in GROUPING.findall(bare) for label in inside.split(",") if label.strip()}


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    bare = STRING.sub('""', expr)
    return [(name, set(MATCHER_NAME.findall(inside))) for name, inside in SELECTOR.findall(bare)]


# ---------------------------------------------------------------------------------------------------- structure


def test_is_importable_dashboard_json() -> None:
    dash = load_dashboard()
    assert dash.keys() >= REQUIRED_KEYS
    assert dash["schemaVersion"] >= 39
    assert dash["id"] is None  # an import creates a new dashboard
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"


def test_panel_ids_are_unique_and_layout_fits() -> None:
    panels = list(all_panels(load_dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]


def test_rows() -> None:
    rows = [p["title"] for p in load_dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Traffic", "Cost", "Latency", "Gateway health"]


def test_panels_use_the_datasource_variable_and_sensible_units() -> None:
    for p in all_panels(load_dashboard()["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "${DS_PROMETHEUS}" in json.dumps(variables["datasource"])
    for name, label in FILTER_VARIABLES.items():
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], name
        assert v["allValue"] == ".*", name  # All must also match series whose label is empty (no team)
        m = LABEL_VALUES.match(v["definition"])
        assert m and m.group(3) == label, v["definition"]
        assert v["query"]["query"] == v["definition"]


def test_variable_queries_name_exposed_series_and_labels() -> None:
    series = exposed()
    for v in load_dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = LABEL_VALUES.match(v["definition"])
        assert m, v["definition"]
        metric, matchers, label = m.groups()
        assert metric in series, metric
        assert label in series[metric], (metric, label)
        assert set(MATCHER_NAME.findall(STRING.sub('""', matchers or ""))) <= series[metric], v["definition"]


def test_metrics_exposed_sanity() -> None:
    """The helper sees what Prometheus would scrape (so the checks below are not vacuous)."""
    series = exposed()
    assert "prism_gateway_requests_total" in series
    assert "status" in series["prism_gateway_requests_total"]
    assert "le" in series["gen_ai_client_operation_duration_seconds_bucket"]
    assert "le" not in series["gen_ai_client_operation_duration_seconds_count"]
    assert "prism_gateway_in_flight_requests" in series
    assert "prism_gateway_recorder_dropped_events_total" in series
    assert "prism_gateway_requests" not in series  # a counter is scraped as *_total only
    assert "gen_ai_client_operation_duration_seconds" not in series  # a histogram as *_bucket/_sum/_count
    assert metric_names('sum by (gen_ai_response_model) (rate(prism_gateway_requests_total{team=~"$team"}[5m]))'
                        ) == {"prism_gateway_requests_total"}
    assert metric_names("max(prism_gateway_recorder_queue)") == {"prism_gateway_recorder_queue"}
    assert grouping_labels("sum by (le, route) (x) / on (route) group_left y") == {"le", "route"}
    assert selector_labels('a{team=~"$team", status!="ok"}') == [("a", {"team", "status"})]


# ---------------------------------------------------------------------------------------------------- queries


@pytest.mark.parametrize(("title", "ref", "expr"), expr_params())
def test_query_names_exposed_metrics_and_labels(title: str, ref: str, expr: str) -> None:
    series = exposed()
    names = metric_names(expr)
    assert names, f"{title}/{ref}: no gateway metric in {expr!r}"
    unknown = names - series.keys()
    assert not unknown, f"{title}/{ref}: not exposed by the gateway: {sorted(unknown)}"
    for label in grouping_labels(expr):  # aggregation and matching labels must exist on every series involved
        missing = [n for n in names if label not in series[n]]
        assert not missing, f"{title}/{ref}: label {label!r} not on {missing}"
    for name, labels in selector_labels(expr):
        if name.startswith(("gen_ai_", "prism_")):
            assert labels <= series[name], f"{title}/{ref}: {name} has no label {sorted(labels - series[name])}"


@pytest.mark.parametrize(("title", "ref", "expr"), expr_params())
def test_query_is_well_formed(title: str, ref: str, expr: str) -> None:
    bare = STRING.sub('""', expr)
    for open_, close in ("()", "[]", "{}"):
        depth = 0
        for ch in bare:
            depth += (ch == open_) - (ch == close)
            assert depth >= 0, f"{title}/{ref}: unbalanced {open_}{close}"
        assert depth == 0, f"{title}/{ref}: unbalanced {open_}{close}"
    defined = {v["name"] for v in load_dashboard()["templating"]["list"]} | GRAFANA_GLOBALS
    used = set(re.findall(r"\$\{?(\w+)", expr))
    assert used <= defined, f"{title}/{ref}: undefined variables {sorted(used - defined)}"


def test_filterable_queries_apply_every_filter() -> None:
    """A series that carries the filter labels is filtered by all four variables, so the dashboard is consistent."""
    series = exposed()
    for title, ref, expr in exprs():
        for name, labels in selector_labels(expr):
            if set(FILTER_VARIABLES.values()) <= series.get(name, frozenset()):
                assert set(FILTER_VARIABLES.values()) <= labels, f"{title}/{ref}: {name} not filtered by all"


def test_legends_name_labels_the_query_keeps() -> None:
    series = exposed()
    for title, t in targets(load_dashboard()):
        names = metric_names(t["expr"])
        kept = set().union(*(series.get(n, frozenset()) for n in names))
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
        assert used <= kept, f"{title}/{t['refId']}: legend uses {sorted(used - kept)}"
        grouped = grouping_labels(t["expr"])
        if grouped and "sum by" in t["expr"]:
            assert used <= grouped, f"{title}/{t['refId']}: legend uses {sorted(used - grouped)}, dropped by sum"


def test_expected_panels_present() -> None:
    titles = {p["title"] for p in all_panels(load_dashboard()["panels"])}
    for wanted in ("Request rate by model", "Error rate", "Errors by error type", "Spend per hour by model",
                   "Spend per day by team", "Projected monthly spend", "Tokens per second by type",
                   "Request latency p50 / p95 / p99 by model", "Time to first token p50 / p95 by model",
                   "Gateway overhead p50 / p99 by route", "In-flight requests", "Recorder queue",
                   "Dropped usage events", "Share of requests per model, by task type",
                   "Cost per 1k requests by task type"):
        assert wanted in titles, wanted
