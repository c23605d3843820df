"""A meshwire process to attack on loopback: its CPU time and memory read from /proc, and a
well-behaved client that must keep being served."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.test_process import free_port, meshwire_cmd

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # seconds: a bound on every wait, never an expectation of speed
TICKS = os.sysconf("SC_CLK_TCK")
WELL_BEHAVED = "127.0.0.2"  # loopback answers for all of 127/8


def config_yaml(
    port: int, limits: str = "{}", extra_routes: str = "", filters: str = "", clusters: str = ""
) -> str:
    return (
        f"listeners:\n"
        f"  - name: ingress\n"
        f"    address: 127.0.0.1:{port}\n"
        f"    protocols: [http1, h2c]\n"
        f"    limits: {limits}\n"
        f"    filters: [{filters}{{type: router}}]\n"
        f"    routes:\n{extra_routes}"
        f"      - match: {{prefix: /}}\n"
        f"        direct_response: {{status: 200, body: ok}}\n"
        f"{clusters}"
    )


class Target:
    """`meshwire run -c` with one listener that answers 200 `ok` itself."""

    def __init__(
        self,
        directory: Path,
        limits: str = "{}",
        extra: str = "",
        filters: str = "",
        clusters: str = "",
    ) -> None:
        self.port = free_port()
        path = directory / "abuse.yaml"
        path.write_text(config_yaml(self.port, limits, extra, filters, clusters))
        argv = meshwire_cmd("run", "-c", str(path), "--no-admin", "--log-level", "error")
        self.log = (directory / "meshwire.log").open("w+")
        self.process = subprocess.Popen(argv, cwd=ROOT, stderr=self.log)
        deadline = time.monotonic() + DEADLINE
        while not self.served():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "meshwire did not start"
            time.sleep(0.05)  # polling for the listener; the deadline bounds it

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def served(self) -> bool:
        """One well-behaved request on a new connection from another client (127.0.0.2: the
        attacks come from 127.0.0.1): True when it got its 200."""
        client = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=DEADLINE, source_address=(WELL_BEHAVED, 0)
        )
        try:
            client.request("GET", "/probe")
            response = client.getresponse()
            return response.status == 200 and response.read() == b"ok"
        except OSError:
            return False
        finally:
            client.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=DEADLINE)
        self.log.close()


@contextmanager
def target(
    directory: Path, limits: str = "{}", extra: str = "", filters: str = "", clusters: str = ""
) -> Iterator[Target]:
    """A Target for the block; `filters` go before the router (e.g. "{type: buffer}, "),
    `extra` routes before the catch-all, `clusters` is a whole `clusters:` section."""
    running = Target(directory, limits, extra, filters, clusters)
    try:
        yield running
        assert running.process.poll() is None, running.output()
        assert "Traceback" not in running.output(), running.output()
    finally:
        running.stop()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=DEADLINE, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_until_closed(sock: socket.socket, data: bytes, piece: int = 65536) -> bool:
    """Send `data`; False when the server closed the connection before all of it left."""
    try:
        for at in range(0, len(data), piece):
            sock.sendall(data[at : at + piece])
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes (bounded by the socket's timeout)."""
    out = bytearray()
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return bytes(out)
