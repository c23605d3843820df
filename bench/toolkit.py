"""What the Python bench scripts share: CPU pinning, ports, processes, RSS, hey's output."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path


def pinned(cpu: int) -> list[str]:
    """`taskset -c CPU` when there are two CPUs to split load and server across, else nothing."""
    ok = shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    return ["taskset", "-c", str(cpu)] if ok else []


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's session, SIGKILL it after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_hey(out: str, ok_codes: tuple[str, ...] = ("200",)) -> dict[str, float]:
    """hey's summary: `pNN` in ms for every percentile it prints, `rps`, and `bad` (responses
    with another status plus transport errors)."""
    found = {f"p{p}": float(v) * 1000 for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    found["rps"] = float(rps.group(1)) if rps else 0.0
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    bad = sum(int(n) for c, n in codes.items() if c not in ok_codes)
    _, _, errors = out.partition("Error distribution:")
    bad += sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", errors, re.M))
    found["bad"] = float(bad)
    return found
