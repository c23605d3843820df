"""What the Python bench scripts share: CPU pinning, ports, processes, RSS, load generators'
output (hey, wrk, wrk with paced.lua) and the `TARGET` lines that bench/summary.py collects."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

PACED_LUA = Path(__file__).resolve().with_name("paced.lua")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_OFFSET = int(os.environ.get("BENCH_PORT_OFFSET", "0"))


def port(number: int) -> int:
    """A bench port moved by $BENCH_PORT_OFFSET, to run beside someone else's bench."""
    return number + PORT_OFFSET


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


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """FIELD (VmRSS, or VmHWM: the high-water mark) of the process and all its descendants, MB."""
    total, found = 0, False
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
                    found = True
        except OSError:
            continue  # exited meanwhile
    return total / 1024 if found else float("nan")


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after "pid (comm)": state ppid pgrp session ... utime stime ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """PID and all its descendants (children, their children, ...), from /proc's ppid fields."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (clock ticks, all threads) summed over PIDS; a vanished one counts 0."""
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def target(name: str, value: str, goal: str, ok: bool | None) -> str:
    """Print and return the line bench/summary.py collects: `TARGET name: value vs goal VERDICT`
    (None: SKIP, the figure could not be measured here)."""
    verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    line = f"TARGET {name}: {value} vs {goal} {verdict}"
    print(line, flush=True)
    return line


def wrk(url: str, seconds: int, connections: int = 16, cpu: int | None = 0) -> dict[str, float]:
    """Closed loop, one wrk thread: `rps`, `requests`, `bad` (non-2xx/3xx + socket errors) and
    `p50`/`p75`/`p90`/`p99` in ms (wrk --latency, microsecond resolution)."""
    pin = pinned(cpu) if cpu is not None else []
    args = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    found = {
        f"p{p}": float(v) * scale[unit]
        for p, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", out, re.M)
    }
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    found["rps"] = float(rps.group(1)) if rps else 0.0
    found["requests"] = float(reqs.group(1)) if reqs else 0.0
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad += sum(int(n) for n in errors.groups()) if errors else 0
    found["bad"] = float(bad + (0 if rps and reqs else 1))
    return found


def paced(
    url: str,
    rate: int,
    seconds: int,
    connections: int = 4,
    method: str | None = None,
    body: str | None = None,
) -> dict[str, float]:
    """`rate` requests/s evenly spaced (wrk + paced.lua, on CPU 0): `p50`/`p90`/`p99`/`max` in
    ms, `rps` achieved, `late` sends, `bad` (non-2xx + errors), `gap_p1`/`gap_p99` in ms (the
    spacing check). A missing figure is NaN and counts as bad."""
    extra = [method or "GET", *([body] if body is not None else [])] if method or body else []
    args = [*pinned(0), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(PACED_LUA)]
    out = subprocess.run(
        [*args, url, "--", str(rate), *extra], capture_output=True, text=True, check=False
    ).stdout
    line = re.search(r"^paced: (.*)$", out, re.M)
    raw = dict(kv.split("=", 1) for kv in line.group(1).split()) if line else {}
    ms = {k.removesuffix("_us"): float(v) / 1000 for k, v in raw.items() if k.endswith("_us")}
    found = {k: v for k, v in ms.items() if k.startswith(("p", "max", "gap"))}
    found["rps"] = float(raw.get("rate", 0))
    found["late"] = float(raw.get("late", 0))
    found["bad"] = float(raw.get("non2xx", 0)) + float(raw.get("errors", 0)) + (0 if raw else 1)
    for p in ("p50", "p90", "p99"):
        found.setdefault(p, float("nan"))
    return found


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
