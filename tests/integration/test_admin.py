"""The admin port: readiness, stats in three formats, clusters, config dump, POST-only mutations."""

from __future__ import annotations

import json
import logging
import re

import trio

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H1Client, H2Client, backend, meshwire, one_route_config


async def ok(request: Request) -> Response:
    await request.body.aclose()
    status = 500 if request.target.startswith(b"/fail") else 200
    return Response(status, [(b"content-length", b"2")], BytesBody(b"ok"))


async def test_stats_count_requests_by_class_upstream_and_connections() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as client:
            for target in ("/a", "/b", "/fail"):
                await client.request("GET", target)
        async with H2Client.connect(mw.port()) as h2c:
            await h2c.request("GET", "/c")
        async with H1Client.connect(mw.port("admin")) as admin:
            text = (await admin.request("GET", "/stats")).body.decode()
            as_json = json.loads((await admin.request("GET", "/stats?format=json")).body)
            filtered = (await admin.request("GET", "/stats?filter=^cluster\\.")).body.decode()
            used = (await admin.request("GET", "/stats?usedonly")).body.decode()
    stats = dict(line.split(": ") for line in text.strip().splitlines())
    assert stats["http.ingress.downstream_rq_2xx"] == "3"
    assert stats["http.ingress.downstream_rq_5xx"] == "1"
    assert stats["http.ingress.downstream_rq_total"] == "4"
    assert stats["http.ingress.downstream_cx_total"] == "2"
    assert stats["cluster.backend.upstream_rq_total"] == "4"
    assert stats["cluster.backend.upstream_rq_5xx"] == "1"
    assert stats["cluster.backend.upstream_cx_total"] == "1"  # keep-alive pool reused
    assert {s["name"]: s["value"] for s in as_json["stats"]}["http.ingress.downstream_rq_4xx"] == 0
    assert "downstream_rq_4xx" not in used  # zero, so left out
    assert "http.ingress.downstream_rq_2xx: 3" in used
    assert filtered
    assert all(line.startswith("cluster.") for line in filtered.splitlines())


async def test_prometheus_text_has_types_and_labels() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as client:
            await client.request("GET", "/")
        async with H1Client.connect(mw.port("admin")) as admin:
            reply = await admin.request("GET", "/stats/prometheus")
    text = reply.body.decode()
    assert (reply.header(b"content-type") or b"").startswith(b"text/plain; version=0.0.4")
    assert "# TYPE meshwire_http_downstream_rq_total counter" in text
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 1' in text
    assert 'meshwire_cluster_upstream_rq_2xx_total{cluster_name="backend"} 1' in text
    assert "# TYPE meshwire_http_downstream_cx_active gauge" in text
    sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+]+$")
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.match(line), line


async def test_ready_clusters_config_dump_and_server_info() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port()) as client:
            await client.request("GET", "/")
        async with H1Client.connect(mw.port("admin")) as admin:
            ready = await admin.request("GET", "/ready")
            clusters = json.loads((await admin.request("GET", "/clusters?format=json")).body)
            clusters_text = (await admin.request("GET", "/clusters")).body.decode()
            dump = json.loads((await admin.request("GET", "/config_dump")).body)
            info = json.loads((await admin.request("GET", "/server_info")).body)
            unknown = await admin.request("GET", "/nope")
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    [cluster] = clusters["cluster_statuses"]
    assert cluster["name"] == "backend"
    assert cluster["hosts"][0]["address"] == f"127.0.0.1:{port}"
    assert f"backend::127.0.0.1:{port}::rq_total::1" in clusters_text
    assert dump["clusters"][0]["endpoints"] == [f"127.0.0.1:{port}"]
    assert dump["listeners"][0]["routes"][0]["timeout"] == 15.0
    assert info["state"] == "LIVE"
    assert info["listeners"]["ingress"] == f"127.0.0.1:{mw.port()}"
    assert unknown.status == 404


async def test_quitquitquit_needs_post_and_drains() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port("admin")) as admin:
            refused = await admin.request("GET", "/quitquitquit")
            assert refused.status == 400
            assert not mw.shutdown.is_set()
            accepted = await admin.request("POST", "/quitquitquit")
        assert accepted.status == 200
        with trio.fail_after(20):
            await mw.stopped.wait()


async def test_log_levels_change_at_runtime_through_post_logging() -> None:
    async with backend(ok) as port, meshwire(one_route_config(0, port)) as mw:
        async with H1Client.connect(mw.port("admin")) as admin:
            refused = await admin.request("GET", "/logging?level=debug")
            bad = await admin.request("POST", "/logging?level=chatty")
            foreign = await admin.request("POST", "/logging?paths=urllib3:debug")
            try:
                changed = await admin.request("POST", "/logging?paths=meshwire.server:debug")
                assert logging.getLogger("meshwire.server").getEffectiveLevel() == logging.DEBUG
            finally:
                logging.getLogger("meshwire.server").setLevel(logging.NOTSET)
    assert (refused.status, bad.status, foreign.status) == (400, 400, 400)
    assert changed.status == 200
    assert b"meshwire.server: debug" in changed.body
