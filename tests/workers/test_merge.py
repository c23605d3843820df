"""Summing the workers' stats: every series added up, nothing renamed, one target_info."""

from __future__ import annotations

from proxy.workers.group import Slot
from proxy.workers.merge import counting_part, sum_clusters, sum_expositions, sum_stats
from proxy.workers.retired import Retired

WORKER_0 = """\
# HELP meshwire_http_downstream_rq_total Downstream requests received.
# TYPE meshwire_http_downstream_rq_total counter
meshwire_http_downstream_rq_total{listener="ingress"} 3
# HELP meshwire_http_downstream_cx_active Downstream connections open now.
# TYPE meshwire_http_downstream_cx_active gauge
meshwire_http_downstream_cx_active{listener="ingress"} 1
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_instance_id="a",service_name="meshwire"} 1.0
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route="default",le="0.005"} 2.0
http_server_request_duration_seconds_bucket{http_route="default",le="+Inf"} 3.0
http_server_request_duration_seconds_count{http_route="default"} 3.0
http_server_request_duration_seconds_sum{http_route="default"} 0.25
"""

WORKER_1 = """\
# HELP meshwire_http_downstream_rq_total Downstream requests received.
# TYPE meshwire_http_downstream_rq_total counter
meshwire_http_downstream_rq_total{listener="ingress"} 4
# HELP meshwire_http_downstream_cx_active Downstream connections open now.
# TYPE meshwire_http_downstream_cx_active gauge
meshwire_http_downstream_cx_active{listener="ingress"} 2
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_instance_id="b",service_name="meshwire"} 1.0
# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route="default",le="0.005"} 1.0
http_server_request_duration_seconds_bucket{http_route="default",le="+Inf"} 1.0
http_server_request_duration_seconds_count{http_route="default"} 1.0
http_server_request_duration_seconds_sum{http_route="default"} 0.5
http_server_request_duration_seconds_bucket{http_route="other",le="0.005"} 1.0
http_server_request_duration_seconds_bucket{http_route="other",le="+Inf"} 1.0
http_server_request_duration_seconds_count{http_route="other"} 1.0
http_server_request_duration_seconds_sum{http_route="other"} 0.125
# HELP meshwire_cluster_upstream_rq_total Upstream requests sent.
# TYPE meshwire_cluster_upstream_rq_total counter
meshwire_cluster_upstream_rq_total{cluster_name="peer"} 5
"""


def test_counters_gauges_and_histograms_add_up_under_their_own_names() -> None:
    summed = sum_expositions([WORKER_0, WORKER_1]).splitlines()
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 7' in summed
    assert 'meshwire_http_downstream_cx_active{listener="ingress"} 3' in summed
    assert 'http_server_request_duration_seconds_bucket{http_route="default",le="0.005"} 3.0' in (
        summed
    )
    assert 'http_server_request_duration_seconds_count{http_route="default"} 4.0' in summed
    assert 'http_server_request_duration_seconds_sum{http_route="default"} 0.75' in summed
    # A series or a family only one worker has is kept as it is, inside its own family.
    assert 'http_server_request_duration_seconds_count{http_route="other"} 1.0' in summed
    assert 'meshwire_cluster_upstream_rq_total{cluster_name="peer"} 5' in summed
    assert summed.count("# TYPE http_server_request_duration_seconds histogram") == 1
    family = summed.index("# TYPE http_server_request_duration_seconds histogram")
    other = summed.index('http_server_request_duration_seconds_sum{http_route="other"} 0.125')
    assert family < other < summed.index("# TYPE meshwire_cluster_upstream_rq_total counter")


def test_the_process_description_is_the_first_workers_only() -> None:
    summed = sum_expositions([WORKER_0, WORKER_1]).splitlines()
    assert [line for line in summed if line.startswith("target_info")] == [
        'target_info{service_instance_id="a",service_name="meshwire"} 1.0'
    ]


def test_every_header_once_and_every_line_a_header_or_a_sample() -> None:
    summed = sum_expositions(["", WORKER_0, WORKER_1, WORKER_0])
    lines = summed.splitlines()
    headers = [line for line in lines if line.startswith("#")]
    assert len(headers) == len(set(headers)) == 10
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 10' in lines
    assert summed.endswith("\n")


def test_stats_add_up_by_name() -> None:
    one = [("a", 1, "counter"), ("b", 2, "gauge")]
    other = [("b", 3, "gauge"), ("c", 0, "counter")]
    assert sum_stats([one, other]) == [("a", 1, "counter"), ("b", 5, "gauge"), ("c", 0, "counter")]


def test_what_only_grows_is_the_counters_and_histograms() -> None:
    kept = counting_part(WORKER_1).splitlines()
    assert "# TYPE meshwire_http_downstream_cx_active gauge" not in kept
    assert not any(
        line.startswith(("meshwire_http_downstream_cx_active", "target_info")) for line in kept
    )
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 4' in kept
    assert "# HELP http_server_request_duration_seconds Duration of HTTP server requests." in kept
    assert 'http_server_request_duration_seconds_sum{http_route="other"} 0.125' in kept


def test_a_dead_workers_counts_stay_in_the_sum() -> None:
    slots = [Slot(0, "a"), Slot(1, "b")]
    retired = Retired(counting_part, sum_expositions)
    assert retired.answers(slots, {0: (10, WORKER_0), 1: (11, WORKER_1)}) == [WORKER_0, WORKER_1]
    restarting = sum_expositions(retired.answers(slots, {0: (10, WORKER_0)})).splitlines()
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 7' in restarting  # kept
    assert 'meshwire_http_downstream_cx_active{listener="ingress"} 1' in restarting  # gone
    fresh = WORKER_1.replace("} 4\n", "} 1\n")
    replaced = sum_expositions(retired.answers(slots, {0: (10, WORKER_0), 1: (12, fresh)}))
    assert 'meshwire_http_downstream_rq_total{listener="ingress"} 8' in replaced.splitlines()


def test_clusters_add_up_by_name_and_host() -> None:
    worker_0 = [
        {
            "name": "api",
            "rq_active": 1,
            "hosts": [{"address": "h:1", "rq_total": 2, "healthy": True}],
        }
    ]
    worker_1 = [
        {
            "name": "api",
            "rq_active": 2,
            "hosts": [
                {"address": "h:1", "rq_total": 3, "healthy": False},
                {"address": "h:2", "rq_total": 1, "healthy": True},
            ],
        },
        {"name": "peer", "rq_active": 0, "hosts": []},
    ]
    assert sum_clusters([worker_0, worker_1]) == [
        {
            "name": "api",
            "rq_active": 3,
            "hosts": [
                {"address": "h:1", "rq_total": 5, "healthy": False},
                {"address": "h:2", "rq_total": 1, "healthy": True},
            ],
        },
        {"name": "peer", "rq_active": 0, "hosts": []},
    ]
