"""Dapr's HTTP families: a request recorded through its row equals one recorded family by family."""

from __future__ import annotations

from exporters.dapr_metrics import DaprMetrics

CALLS = [
    ("POST", "/v1.0/invoke/orders/method/new", 200, 1.0, 10, 2048),
    ("POST", "/v1.0/invoke/orders/method/new", 200, 5.0, 1024, 1),
    ("POST", "/v1.0/invoke/orders/method/new", 500, 2.5, 0, 0),
    ("GET", "/v1.0/state/store", 204, 100000.0, 0, 4294967296),
    ("GET", 'odd "path"\\', 404, 0.2, 3, 3),
]


def by_family(metrics: DaprMetrics, server: bool) -> None:
    """What server()/client() record, spelled out one family at a time."""
    for method, path, status, ms, rx, tx in CALLS:
        values = (metrics.app_id, method, path)
        full = (*values, str(status))
        if server:
            metrics.server_requests.add(values)
            metrics.server_responses.add(full)
            metrics.server_latency.observe(full, ms)
            metrics.server_request_bytes.observe(values, rx)
            metrics.server_response_bytes.observe(full, tx)
        else:
            metrics.client_completed.add(full)
            metrics.client_latency.observe(full, ms)
            metrics.client_sent_bytes.observe(values, rx)
            metrics.client_received_bytes.observe(full, tx)


def test_server_and_client_rows_record_what_each_family_would() -> None:
    for server in (True, False):
        rows, families = DaprMetrics("app"), DaprMetrics("app")
        for method, path, status, ms, rx, tx in CALLS:
            if server:
                rows.server(method, path, status, ms, rx, tx)
            else:
                rows.client(method, path, status, ms, rx, tx)
        by_family(families, server)
        text = rows.render()
        assert text == families.render()
        name = "dapr_http_server_request_count" if server else "dapr_http_client_completed_count"
        assert f'{name}{{app_id="app",method="POST",path="/v1.0/invoke/orders/method/new"' in text


def test_counts_buckets_and_sums() -> None:
    metrics = DaprMetrics("app")
    for method, path, status, ms, rx, tx in CALLS[:2]:
        metrics.server(method, path, status, ms, rx, tx)
    lines = metrics.render().splitlines()
    labels = 'app_id="app",method="POST",path="/v1.0/invoke/orders/method/new",status="200"'
    assert f"dapr_http_server_response_count{{{labels}}} 2" in lines
    assert f'dapr_http_server_latency_bucket{{{labels},le="1"}} 1' in lines  # 1 ms: le="1"
    assert f'dapr_http_server_latency_bucket{{{labels},le="4"}} 1' in lines
    assert f'dapr_http_server_latency_bucket{{{labels},le="5"}} 2' in lines
    assert f"dapr_http_server_latency_sum{{{labels}}} 6" in lines
    assert f"dapr_http_server_latency_count{{{labels}}} 2" in lines
