"""Dashboards: well-formed, query exported names and labels, valid PromQL, data in Prometheus."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from config import schema
from proxy.http.model import BytesBody, Request, Response
from tests.dashboards.promql import (
    panel_exprs,
    parse,
    substitute,
    template_query,
    variable_queries,
    walk_panels,
)
from tests.integration.harness import H1Client, H2Client, Running, backend, meshwire

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "dashboards" / "grafana"
WORKBOOK = ROOT / "dashboards" / "azure" / "workbook.json"
COLLECTOR = ROOT / "config" / "examples" / "collector" / "otel-collector.yaml"

# The uid is what links and provisioning refer to: changing one is a breaking change.
UIDS = {
    "traffic-overview.json": "meshwire-traffic-overview",
    "upstream-health.json": "meshwire-upstream-health",
    "telemetry-health.json": "meshwire-telemetry-health",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"reqps", "s", "percentunit", "short", "bytes", "cps", "ops"}
# Series Prometheus itself writes for every scrape target; meshwire cannot export these.
ALLOWLIST = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"instance", "job"}  # attached by Prometheus at scrape time


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def all_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, where, raw PromQL) for every panel target and every query variable."""
    out: list[tuple[str, str, str]] = []
    for name, dash in dashboards().items():
        out += [(name, f"panel {title!r}", expr) for title, expr in panel_exprs(dash)]
        for var, query in variable_queries(dash):
            expr, _ = template_query(query)
            assert expr is not None, f"{name}: variable {var}: unsupported query {query!r}"
            out.append((name, f"variable {var!r}", expr))
    return out


def panel_queries() -> list[tuple[str, str, str]]:
    return [(n, t, e) for n, d in dashboards().items() for t, e in panel_exprs(d)]


def tool(name: str) -> str:
    """Path of a Prometheus binary; missing is a failure in CI, a skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        reason = f"`{name}` not installed (Debian package `prometheus`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


# --- structure ---------------------------------------------------------------------------------


def test_grafana_dashboards_have_stable_unique_uids() -> None:
    found = {name: dash["uid"] for name, dash in dashboards().items()}
    assert found == UIDS
    assert len(set(found.values())) == len(found)
    for dash in dashboards().values():
        assert dash["title"].startswith("meshwire / ")
        assert isinstance(dash["schemaVersion"], int)


def test_datasource_variable_is_used_by_every_panel_and_query_variable() -> None:
    for name, dash in dashboards().items():
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        for var in variables.values():
            if var["type"] == "query":
                assert var["datasource"] == DATASOURCE, (name, var["name"])
        for panel in walk_panels(dash["panels"]):
            where = f"{name}: {panel['title']!r}"
            assert panel.get("datasource") == DATASOURCE, where
            if panel["type"] == "row":
                continue
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target.get("datasource", DATASOURCE) == DATASOURCE, where


def test_every_panel_has_a_fitting_unit_and_a_grid_position() -> None:
    for name, dash in dashboards().items():
        ids = [p["id"] for p in walk_panels(dash["panels"])]
        assert len(ids) == len(set(ids)), name
        for panel in walk_panels(dash["panels"]):
            where = f"{name}: {panel['title']!r}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, where
            if panel["type"] == "row":
                continue
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit in UNITS, where
            exprs = " ".join(t["expr"] for t in panel["targets"])
            if "histogram_quantile" in exprs or "_seconds_sum" in exprs:
                assert unit == "s", where
            elif "rate(" in exprs and " / " not in exprs:
                assert unit in ("reqps", "cps", "ops"), where


def test_rates_use_rate_interval_and_variables_only_in_regex_matchers() -> None:
    for name, where, expr in all_exprs():
        if "rate(" in expr:
            assert "[$__rate_interval]" in expr, (name, where, expr)
        for var in re.finditer(r"\$\{?(\w+)", expr):
            if not var.group(1).startswith("__"):  # multi-value variables, "All" = .*
                assert expr[: var.start()].endswith('=~"'), (name, where, expr)


def test_templating_by_listener_cluster_and_instance() -> None:
    names = {n: {v["name"] for v in d["templating"]["list"]} for n, d in dashboards().items()}
    assert {"datasource", "instance", "listener", "route"} <= names["traffic-overview.json"]
    assert {"datasource", "instance", "cluster"} <= names["upstream-health.json"]
    assert {"datasource", "instance"} <= names["telemetry-health.json"]


def test_workbook_is_a_notebook_over_requests_dependencies_and_custom_metrics() -> None:
    workbook = json.loads(WORKBOOK.read_text())
    assert workbook["version"] == "Notebook/1.0"
    kql_items = [i["content"] for i in workbook["items"] if i["type"] == 3]
    assert kql_items
    assert all(q["version"] == "KqlItem/1.0" and q["query"].strip() for q in kql_items)
    kql = "\n".join(q["query"] for q in kql_items)
    for name in (
        "requests",
        "dependencies",
        "customMetrics",
        "'http.server.request.duration'",
        "'http.client.request.duration'",
        "'http.server.active_requests'",
        "percentile",
        "success == false",
    ):
        assert name in kql, name
    params = [i for i in workbook["items"] if i["type"] == 9]
    declared = {p["name"] for item in params for p in item["content"]["parameters"]}
    assert {"TimeRange", "Service"} <= declared
    assert all("{Service}" in q["query"] for q in kql_items)


def test_collector_example_wires_otlp_to_zipkin_and_azure_monitor() -> None:
    text = COLLECTOR.read_text()
    assert "contrib" in text
    config = yaml.safe_load(text)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert "batch" in config["processors"]
    assert config["exporters"]["zipkin"]["endpoint"].endswith("/api/v2/spans")
    assert config["exporters"]["azuremonitor"]["connection_string"].startswith("${env:")
    pipelines = config["service"]["pipelines"]
    for kind in ("receivers", "processors", "exporters"):
        for pipeline in pipelines.values():
            assert set(pipeline[kind]) <= set(config[kind])
    assert pipelines["traces"]["exporters"] == ["zipkin", "azuremonitor"]
    assert "zipkin" not in pipelines["metrics"]["exporters"]


def test_promql_reader_finds_metrics_labels_and_grouping() -> None:
    query = parse(
        substitute(
            'histogram_quantile(0.95, sum by (le, http_route) (rate(a_bucket{x=~"$v",'
            ' y!="}"}[$__rate_interval]))) / on (z) group_left sum(b_total offset 5m)'
            " or vector(0) * 1e-3 > bool inf"
        )
    )
    assert query.metrics == {"a_bucket", "b_total"}
    assert dict(query.selectors)["a_bucket"] == {"x", "y"}
    assert query.grouping == {"le", "http_route", "z"}
    assert {"histogram_quantile", "sum", "rate", "vector"} <= query.functions
    assert template_query('label_values(m{a=~"$i"}, l)') == ('m{a=~"$i"}', "l")
    nested = [{"type": "row", "panels": [{"targets": [{"expr": "c"}]}]}]
    assert [p.get("targets") for p in walk_panels(nested)][1] == [{"expr": "c"}]


# --- against a running meshwire ----------------------------------------------------------------


async def answer(request: Request) -> Response:
    """Backend: /slow never answers, /fail is a 500, anything else a 200."""
    await request.body.aclose()
    if request.target.startswith(b"/slow"):
        await trio.sleep_forever()
    status = 500 if request.target.startswith(b"/fail") else 200
    return Response(status, [(b"content-length", b"2")], BytesBody(b"ok"))


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario(upstream: int, dead: int) -> schema.Config:
    """One listener; a backend cluster (200/500, a hanging path behind a short timeout) and a
    cluster whose only endpoint refuses connections."""
    return schema.Config(
        admin=schema.Admin(address="127.0.0.1:0"),
        drain_timeout=schema.Duration(2.0),
        listeners=[
            schema.Listener(
                name="ingress",
                address="127.0.0.1:0",
                routes=[
                    schema.Route(
                        name="slow",
                        match=schema.RouteMatch(prefix="/slow"),
                        cluster="backend",
                        timeout=schema.Duration(0.2),
                    ),
                    schema.Route(
                        name="down", match=schema.RouteMatch(prefix="/down"), cluster="dead"
                    ),
                    schema.Route(
                        name="all", match=schema.RouteMatch(prefix="/"), cluster="backend"
                    ),
                ],
            )
        ],
        clusters=[
            schema.Cluster(name="backend", endpoints=[f"127.0.0.1:{upstream}"]),
            schema.Cluster(
                name="dead", endpoints=[f"127.0.0.1:{dead}"], connect_timeout=schema.Duration(1.0)
            ),
        ],
    )


@asynccontextmanager
async def running() -> AsyncIterator[Running]:
    async with backend(answer) as port, meshwire(scenario(port, free_port())) as mw:
        yield mw


async def drive(mw: Running) -> None:
    """One round of every kind of request, over HTTP/1.1 and h2c."""
    port = mw.port()
    async with H1Client.connect(port) as h1:
        assert (await h1.request("GET", "/ok")).status == 200
        assert (await h1.request("POST", "/fail", body=b"x")).status == 500
    async with H1Client.connect(port) as h1:
        assert (await h1.request("GET", "/down")).status == 503
    async with H1Client.connect(port) as h1:
        assert (await h1.request("GET", "/slow")).status == 504
    async with H2Client.connect(port) as h2c:
        assert (await h2c.request("GET", "/ok")).status == 200
        assert (await h2c.request("GET", "/fail")).status == 500
        assert (await h2c.request("GET", "/down")).status == 503


async def exposition(mw: Running) -> str:
    async with H1Client.connect(mw.port("admin")) as admin:
        reply = await admin.request("GET", "/stats/prometheus")
    assert reply.status == 200
    return reply.body.decode()


def exported_labels(text: str) -> dict[str, set[str]]:
    """Sample name (with _bucket/_sum/_count/_total) → every label seen on it."""
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    return labels


async def test_every_dashboard_metric_and_label_is_exported() -> None:
    async with running() as mw:
        await drive(mw)
        exported = exported_labels(await exposition(mw))
    wanted: dict[str, set[str]] = defaultdict(set)
    label_problems: list[str] = []
    for name, where, raw in all_exprs():
        query = parse(substitute(raw))
        known = set().union(*(exported.get(m, set()) for m in query.metrics)) | TARGET_LABELS
        for metric, matched in query.selectors:
            assert metric is not None, (name, where, raw)
            wanted[metric].add(f"{name} {where}")
            unknown = matched - exported.get(metric, set()) - TARGET_LABELS
            if metric in exported and unknown:
                label_problems.append(f"{name} {where}: {metric} has no label {sorted(unknown)}")
        if query.metrics & exported.keys() and query.grouping - known:
            label_problems.append(f"{name} {where}: grouping by {sorted(query.grouping - known)}")
    for name, dash in dashboards().items():
        for var, raw_query in variable_queries(dash):
            expr, label = template_query(raw_query)
            [metric] = parse(substitute(expr or "")).metrics
            if metric in exported and label not in exported[metric] | TARGET_LABELS:
                label_problems.append(f"{name} variable {var}: {metric} has no label {label}")
    missing = {m: sorted(w) for m, w in wanted.items() if m not in exported and m not in ALLOWLIST}
    assert not missing, "queried but not exported on /stats/prometheus:\n" + json.dumps(
        missing, indent=1
    )
    assert not label_problems, "\n".join(label_problems)


async def test_promtool_accepts_the_exposition() -> None:
    promtool = tool("promtool")
    async with running() as mw:
        await drive(mw)
        text = await exposition(mw)
    result = await trio.run_process(
        [promtool, "check", "metrics"],
        stdin=text.encode(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_promtool_accepts_every_dashboard_expression(tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": substitute(expr)}
        for i, (_, _, expr) in enumerate(all_exprs())
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = await trio.run_process(
        [promtool, "check", "rules", str(path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert f"{len(rules)} rules found" in output


# --- end to end with a real Prometheus ---------------------------------------------------------


def http_get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 with a JSON error body
        with exc:
            return dict(json.load(exc))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def stop(process: trio.Process) -> None:
    """Cancelling run_process: SIGTERM, and SIGKILL if Prometheus has not exited in 10 s."""
    process.terminate()
    await trio.sleep(10)
    process.kill()


async def test_real_prometheus_scrapes_meshwire_and_every_panel_has_data(tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    queries = [(f"{n} {t}", substitute(e)) for n, t, e in panel_queries()]
    assert queries
    base = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "prometheus.log"
    empty: list[str] = []
    complete = False
    async with running() as mw, trio.open_nursery() as nursery:
        target = f"127.0.0.1:{mw.port('admin')}"
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "meshwire",
                            "metrics_path": "/stats/prometheus",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )

        async def traffic() -> None:
            while True:
                await drive(mw)
                await trio.sleep(0.1)

        nursery.start_soon(traffic)
        with log.open("wb") as sink:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [
                        prometheus,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'data'}",
                        f"--web.listen-address={base.removeprefix('http://')}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                    check=False,
                    deliver_cancel=stop,
                )
            )
        with trio.move_on_after(60):
            while not complete:
                assert process.returncode is None, log.read_text()[-2000:]
                if await trio.to_thread.run_sync(http_ok, f"{base}/-/ready"):
                    empty = []
                    for where, expr in queries:
                        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
                        result = await trio.to_thread.run_sync(http_get_json, url)
                        assert result["status"] == "success", (where, expr, result)
                        if not result["data"]["result"]:
                            empty.append(f"{where}: {expr}")
                    complete = not empty
                if not complete:
                    await trio.sleep(0.5)
        nursery.cancel_scope.cancel()  # stops the traffic and terminates Prometheus
    assert process.returncode is not None
    assert complete, "within 60 s, " + (
        "panels without data:\n" + "\n".join(empty) if empty else "Prometheus was never ready"
    )
