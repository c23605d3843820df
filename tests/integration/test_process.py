"""meshwire as a process: the CLI, config errors before binding, 100 MB in bounded memory."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import yaml

from proxy.http.model import BytesBody, Request, Response
from tests.integration.harness import H2Client, backend

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
MB = 1024 * 1024
DEADLINE = 60


def meshwire_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@asynccontextmanager
async def meshwire_process(*args: str) -> AsyncIterator[trio.Process]:
    """Start `meshwire run ARGS`, wait for its admin port, SIGTERM it at the end."""
    admin = free_port()
    proc = await trio.lowlevel.open_process(
        meshwire_cmd("run", *args, "--admin", f"127.0.0.1:{admin}", "--log-level", "warning"),
        cwd=ROOT,
    )
    try:
        with trio.fail_after(DEADLINE):
            while True:
                assert proc.poll() is None, "meshwire exited during start-up"
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", admin)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await probe.aclose()
                break
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(DEADLINE):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
            raise AssertionError("meshwire did not drain and exit on SIGTERM")
    assert proc.returncode == 0, f"meshwire exited with {proc.returncode} after SIGTERM"


def test_validate_reports_every_problem_with_its_path() -> None:
    result = subprocess.run(
        meshwire_cmd("validate", str(EXAMPLES / "invalid.yaml")),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3
    assert all("$." in line for line in lines), lines


def test_validate_accepts_every_example() -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml") if p.name != "invalid.yaml")
    result = subprocess.run(
        meshwire_cmd("validate", *files), capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(files)


def test_run_with_a_bad_config_exits_2_before_binding(tmp_path: Path) -> None:
    """The listener's port is held by the test: had meshwire bound first, it would fail on that."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "listeners:\n"
            f"  - {{name: l, address: '127.0.0.1:{port}', routes: [{{match: {{prefix: /}},"
            " cluster: missing}]}\n"
        )
        result = subprocess.run(
            meshwire_cmd("run", "-c", str(bad)),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
    assert result.returncode == 2
    assert "$.listeners[0].routes[0].cluster" in result.stderr
    assert "in use" not in result.stderr


def test_dump_config_round_trips_through_validate(tmp_path: Path) -> None:
    dumped = subprocess.run(
        meshwire_cmd(
            "run",
            "--listen",
            "127.0.0.1:19010",
            "--upstream",
            "http://127.0.0.1:18080",
            "--dump-config",
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    assert "127.0.0.1:18080" in dumped
    path = tmp_path / "dumped.yaml"
    path.write_text(dumped)
    check = subprocess.run(
        meshwire_cmd("validate", str(path)), capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert check.returncode == 0, check.stderr


CHUNK = b"m" * MB


class Source:
    """100 MB produced a megabyte at a time, never held whole."""

    length: int | None = 100 * MB
    trailers = None

    def __init__(self) -> None:
        self.left = 100

    async def read(self) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        return CHUNK

    async def aclose(self) -> None:
        self.left = 0


async def sink_or_source(request: Request) -> Response:
    """POST: count the body and answer the size. GET: stream 100 MB back."""
    if request.method == b"POST":
        size = 0
        while data := await request.body.read():
            size += len(data)
        body = str(size).encode()
        return Response(200, [(b"content-length", str(len(body)).encode())], BytesBody(body))
    await request.body.aclose()
    return Response(200, [(b"content-length", str(100 * MB).encode())], Source())


async def test_100_mb_each_way_streams_through_in_bounded_memory() -> None:
    """Upload 100 MB to a sink and download 100 MB from a source; the proxy's peak RSS stays low."""
    chunk = CHUNK
    handler = sink_or_source
    async with backend(handler) as upstream:
        listen = free_port()
        async with meshwire_process(
            "--listen", f"127.0.0.1:{listen}", "--upstream", f"http://127.0.0.1:{upstream}"
        ) as proc:
            idle = rss_peak_mb(proc.pid)
            stream = await trio.open_tcp_stream("127.0.0.1", listen)
            async with stream:
                head = (
                    f"POST /sink HTTP/1.1\r\nhost: t\r\ncontent-length: {100 * MB}\r\n\r\n"
                ).encode()
                await stream.send_all(head)
                for _ in range(100):
                    await stream.send_all(chunk)
                answer = await _read_response(stream)
                assert answer.endswith(str(100 * MB).encode()), answer[-200:]
                await stream.send_all(b"GET /source HTTP/1.1\r\nhost: t\r\n\r\n")
                received = await _drain_response(stream)
            assert received == 100 * MB
            peak = rss_peak_mb(proc.pid)
    assert peak - idle < 64, f"peak RSS grew by {peak - idle:.0f} MB over idle {idle:.0f} MB"


async def _read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(DEADLINE):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        while len(body) < length:
            body += await stream.receive_some(65536)
    return head + b"\r\n\r\n" + body


async def _drain_response(stream: trio.SocketStream) -> int:
    data = b""
    with trio.fail_after(DEADLINE):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        received = len(rest)
        while received < 100 * MB:
            piece = await stream.receive_some(1 << 20)
            assert piece, "connection closed early"
            received += len(piece)
    return received


async def test_100_mb_each_way_over_h2c_respects_flow_control_and_memory() -> None:
    """The same through HTTP/2: credit flows back only as each side consumes."""
    async with backend(sink_or_source) as upstream:
        listen = free_port()
        async with meshwire_process(
            "--listen", f"127.0.0.1:{listen}", "--upstream", f"http://127.0.0.1:{upstream}"
        ) as proc:
            idle = rss_peak_mb(proc.pid)
            async with H2Client.connect(listen) as client:
                with trio.fail_after(DEADLINE):
                    upload = await client.request("POST", "/sink", body=CHUNK * 100)
                    client.keep_bodies = False  # count the 100 MB, do not keep it
                    download = await client.request("GET", "/source")
            peak = rss_peak_mb(proc.pid)
    assert (upload.status, upload.body) == (200, str(100 * MB).encode())
    assert (download.status, download.received) == (200, 100 * MB)
    assert peak - idle < 64, f"peak RSS grew by {peak - idle:.0f} MB over idle {idle:.0f} MB"


def test_dapr_configuration_sets_exporters_and_a_tracing_filter(tmp_path: Path) -> None:
    dapr = tmp_path / "config.yaml"
    dapr.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: tracing}\n"
        "spec:\n  tracing:\n    samplingRate: '0.5'\n"
        "    zipkin: {endpointAddress: 'http://127.0.0.1:9411/api/v2/spans'}\n"
    )
    quick = ["--listen", "127.0.0.1:19010", "--upstream", "http://127.0.0.1:18080"]
    result = subprocess.run(
        meshwire_cmd("run", *quick, "--dapr-config", str(dapr), "--dump-config"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    dumped = yaml.safe_load(result.stdout)
    assert dumped["telemetry"]["zipkin"]["endpoint"] == "http://127.0.0.1:9411/api/v2/spans"
    assert dumped["listeners"][0]["filters"][0] == {
        "type": "tracing",
        "sampling_rate": 0.5,
        "propagators": ["tracecontext", "b3multi"],
    }
    dapr.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\n"
        "spec: {tracing: {otel: {protocol: grpc}}}\n"
    )
    bad = subprocess.run(
        meshwire_cmd("run", *quick, "--dapr-config", str(dapr)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "$.spec.tracing.otel.endpointAddress" in bad.stderr


def test_log_as_json_writes_every_process_log_line_as_json() -> None:
    quick = ["--listen", f"127.0.0.1:{free_port()}", "--upstream", "http://127.0.0.1:9"]
    proc = subprocess.Popen(
        meshwire_cmd("run", *quick, "--no-admin", "--log-as-json"),
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    watchdog = threading.Timer(DEADLINE, proc.kill)  # a hung start fails instead of hanging
    watchdog.start()
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not any("listening" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"meshwire exited before listening: {lines}"
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate()
    finally:
        watchdog.cancel()
    assert proc.returncode == 0
    entries = [json.loads(line) for line in [*lines, *rest.splitlines()]]
    assert {e["type"] for e in entries} == {"log"}
    assert all(e["scope"].startswith("meshwire") for e in entries)
    assert any(e["msg"] == "stopped" for e in entries)
