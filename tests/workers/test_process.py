"""`run --concurrency 2` as processes: both workers serve, the admin port sums them, a dead
worker is replaced, SIGTERM drains them all, a killed supervisor leaves none behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from proxy.http.model import Request, Response
from tests.integration.harness import Reply, backend
from tests.integration.test_process import free_port, meshwire_cmd
from tests.workers.helpers import (
    DEADLINE,
    ROOT,
    Supervised,
    request,
    supervised,
    until,
    until_gone,
    until_ready,
)

REQUESTS = 40


async def ok(request: Request) -> Response:
    await request.body.aclose()
    return Response.text(200, "ok\n")


def quick(listen: int, upstream: int) -> tuple[str, ...]:
    return ("--listen", f"127.0.0.1:{listen}", "--upstream", f"http://127.0.0.1:{upstream}")


def sample(exposition: str, series: str) -> float:
    [line] = [line for line in exposition.splitlines() if line.startswith(series + " ")]
    return float(line.rpartition(" ")[2])


async def until_logged(supervised: Supervised, text: str, times: int = 1) -> None:
    async def logged() -> bool:
        return supervised.stderr().count(text) >= times

    await until(logged)


def ready_is(supervised: Supervised, status: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await supervised.get("/ready")).status == status

    return check


async def test_both_workers_serve_and_the_admin_port_sums_them(tmp_path: Path) -> None:
    listen = free_port()
    async with backend(ok) as upstream:
        config = tmp_path / "mesh.yaml"
        config.write_text(
            "concurrency: 3\n"  # the flag (2) wins
            f"listeners:\n  - name: ingress\n    address: 127.0.0.1:{listen}\n"
            "    routes: [{match: {prefix: /}, cluster: upstream}]\n"
            f"clusters:\n  - name: upstream\n    endpoints: ['127.0.0.1:{upstream}']\n"
        )
        async with supervised(tmp_path, "-c", str(config)) as mw:
            assert len(await mw.workers()) == 2
            for _ in range(REQUESTS):  # a connection each: the kernel picks a worker for each
                assert (await request(listen, "GET", "/")).status == 200
            name = "http.ingress.downstream_rq_total"
            per_worker = [await mw.stat(name, worker=i) for i in (0, 1)]
            assert min(per_worker) > 0, per_worker  # both processes answered
            assert sum(per_worker) == REQUESTS
            assert await mw.stat(name) == REQUESTS
            assert await mw.stat("cluster.upstream.upstream_rq_total") == REQUESTS
            prometheus = (await mw.get("/stats/prometheus")).body.decode()
            ingress = 'meshwire_http_downstream_rq_total{listener="ingress"}'
            assert sample(prometheus, ingress) == REQUESTS
            durations = [
                float(line.rpartition(" ")[2])
                for line in prometheus.splitlines()
                if line.startswith("http_server_request_duration_seconds_count{")
            ]
            assert sum(durations) == REQUESTS  # OpenTelemetry's histograms add up too
            assert prometheus.count("\ntarget_info{") == 1
            clusters = (await mw.get("/clusters")).body.decode()
            assert f"upstream::127.0.0.1:{upstream}::rq_total::{REQUESTS}\n" in clusters
            assert (await mw.get("/ready")).body == b"LIVE\n"


async def test_sigterm_drains_every_worker_and_an_in_flight_request_finishes(
    tmp_path: Path,
) -> None:
    arrived, release = trio.Event(), trio.Event()

    async def slow(request: Request) -> Response:
        await request.body.aclose()
        arrived.set()
        await release.wait()
        return Response.text(200, "finished\n")

    listen = free_port()
    replies: list[Reply] = []
    async with backend(slow) as upstream, supervised(tmp_path, *quick(listen, upstream)) as mw:
        pids = [int(str(w["pid"])) for w in await mw.workers()]
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                replies.append(await request(listen, "GET", "/slow"))

            nursery.start_soon(call)
            with trio.fail_after(DEADLINE):
                await arrived.wait()
            mw.process.send_signal(signal.SIGTERM)
            await until_logged(mw, "]: draining: stop accepting", times=2)  # both workers
            release.set()
        with trio.fail_after(DEADLINE):
            await mw.process.wait()
        await until_gone(pids)
    assert [(r.status, r.body) for r in replies] == [(200, b"finished\n")]
    assert mw.stderr().count("SIGTERM: draining 2 workers") == 1


async def test_a_worker_that_dies_is_replaced_and_quitquitquit_stops_them_all(
    tmp_path: Path,
) -> None:
    listen = free_port()
    async with backend(ok) as upstream, supervised(tmp_path, *quick(listen, upstream)) as mw:
        for _ in range(REQUESTS):
            assert (await request(listen, "GET", "/")).status == 200
        name = "http.ingress.downstream_rq_total"
        lost = await mw.stat(name, worker=1)
        assert await mw.stat(name) == REQUESTS  # a scrape: what the sums keep of a dead worker
        series = 'meshwire_http_downstream_rq_total{listener="ingress"}'
        assert sample((await mw.get("/stats/prometheus")).body.decode(), series) == REQUESTS
        before = await mw.workers()
        victim = int(str(before[1]["pid"]))
        os.kill(victim, signal.SIGKILL)
        await until(ready_is(mw, 503))  # one worker short: not ready
        await until(ready_is(mw, 200))
        after = await mw.workers()
        assert after[0]["pid"] == before[0]["pid"]
        assert after[1]["pid"] != victim
        assert after[1]["restarts"] == 1
        assert mw.stderr().count("restarting it") == 1
        assert f"worker 1 (pid {victim}) was killed by SIGKILL: restarting it" in mw.stderr()
        # The new worker starts from zero; the sums keep what the dead one had counted.
        assert await mw.stat(name, worker=1) == 0 < lost
        assert await mw.stat(name) == REQUESTS
        assert sample((await mw.get("/stats/prometheus")).body.decode(), series) == REQUESTS
        assert await mw.stat("http.ingress.downstream_cx_active") == 0
        for _ in range(4):
            assert (await request(listen, "GET", "/")).status == 200
        assert await mw.stat(name) == REQUESTS + 4
        assert (await request(mw.admin, "POST", "/quitquitquit")).status == 200
        with trio.fail_after(DEADLINE):
            await mw.process.wait()
        await until_gone([int(str(w["pid"])) for w in after])


async def test_a_worker_that_keeps_failing_stops_them_all(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    access = logs / "access.log"
    listen = free_port()
    async with (
        backend(ok) as upstream,
        supervised(
            tmp_path, *quick(listen, upstream), "--access-log", str(access), exit_code=1
        ) as mw,
    ):
        workers = await mw.workers()
        shutil.rmtree(logs)  # a worker started from now on cannot open its access log
        os.kill(int(str(workers[1]["pid"])), signal.SIGKILL)
        with trio.fail_after(DEADLINE):
            await mw.process.wait()
        await until_gone([int(str(w["pid"])) for w in workers])
    stderr = mw.stderr()
    assert stderr.count("restarting it") == 4
    assert stderr.count(f"worker 1: meshwire: cannot start: {access}: no such file") == 4
    assert "its exit number 5 within 60s: stopping all workers" in stderr


async def test_a_killed_supervisor_leaves_no_worker_behind(tmp_path: Path) -> None:
    listen = free_port()
    async with (
        backend(ok) as upstream,
        supervised(tmp_path, *quick(listen, upstream), exit_code=-signal.SIGKILL) as mw,
    ):
        pids = [int(str(w["pid"])) for w in await mw.workers()]
        mw.process.kill()
        await mw.process.wait()
        await until_gone(pids)  # they drain (nothing in flight) and exit


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        meshwire_cmd("run", *args), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE
    )


def test_a_config_error_is_reported_once_before_any_worker_starts(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "concurrency: 2\nlisteners:\n  - name: l\n    address: 127.0.0.1:0\n"
        "    routes: [{match: {prefix: /}, cluster: missing}]\n"
    )
    result = _run("-c", str(config), "--no-admin")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}: $.listeners[0].routes[0].cluster: unknown cluster 'missing' (clusters: none"
        " are defined)"
    ]


def test_a_start_up_failure_in_the_workers_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "access.log"
    args = ("--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "--no-admin")
    result = _run(*args, "--access-log", str(missing), "--concurrency", "2")
    assert result.returncode == 2
    assert result.stderr == f"meshwire: cannot start: {missing}: no such file or directory\n"


async def test_workers_import_the_supervisors_code_whatever_the_working_directory(
    tmp_path: Path,
) -> None:
    """Run from a project with a `config/` package of its own: the `meshwire` script does not
    look in the working directory, and neither may its workers."""
    decoy = tmp_path / "project" / "config"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the project config, not meshwire')\n")
    meshwire = Path(sys.executable).parent / "meshwire"
    listen, admin = free_port(), free_port()
    argv = [str(meshwire), "run", *quick(listen, 9), "--admin", f"127.0.0.1:{admin}"]
    log = tmp_path / "meshwire.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*argv, "--concurrency", "2"], cwd=decoy.parent, stderr=stderr
        )
    running = Supervised(process, admin, log)
    try:
        await until_ready(running)
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(DEADLINE):
            await process.wait()
    assert process.returncode == 0, log.read_text()


def test_a_busy_port_is_the_one_line_it_always_was() -> None:
    with socket_held() as port:
        args = ("--listen", f"127.0.0.1:{port}", "--upstream", "http://127.0.0.1:9")
        result = _run(*args, "--no-admin", "--concurrency", "2")
    assert result.returncode == 2
    assert result.stderr == f"--listen: cannot listen on 127.0.0.1:{port}: address already in use\n"


class socket_held:
    """A port some other program listens on."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
