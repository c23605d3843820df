"""Run every bench script, then one block: each target of the performance issue, value, verdict.

Usage: .venv/bin/python bench/summary.py [--seconds N] [--rounds N] [--only run,sidecar,...]
       .venv/bin/python bench/summary.py --from LOG      (the block again, from a saved run)
`make bench` runs this (`make bench BENCH_ARGS="--seconds 3 --rounds 1"` for a quick pass).

Each script stays runnable alone and prints its own tables and `TARGET name: value vs goal
VERDICT` lines (VERDICT: PASS, FAIL or SKIP); this runs them one after another (never two at a
time), passes their output through, saves it to a log, and ends with the block. A target that no
script printed (a script failed, or was left out with --only) is listed as MISSING.
Exit status: 0 when every script ran and printed its targets, whatever their verdicts; else 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python")
STORES = ("memory", "sqlite", "redis", "postgres")
# The targets, in its order: (script, the name its TARGET line carries).
EXPECTED: list[tuple[str, str]] = [
    ("run", "envoy h1 vs naive-httptools"),
    ("run", "envoy h1 vs nginx"),
    ("run", "envoy h2c vs nginx"),
    ("run", "envoy p50 @500/s paced vs nginx"),
    ("sidecar", "sidecar capacity vs nginx hop"),
    ("sidecar", "sidecar added p50, 1 at a time"),
    ("sidecar", "sidecar added p99, 1 at a time"),
    ("sidecar", "sidecar idle RSS"),
    ("sidecar", "sidecar RSS after load"),
    ("pubsub", "pubsub publish redis"),
    ("pubsub", "pubsub publish jetstream"),
    *[("state", f"state GET added p50, {s}, {path}") for s in STORES for path in ("HTTP", "gRPC")],
    ("tracing", "tracing 1% cost"),
    ("tracing", "tracing 100% cost"),
    ("cores", "cores CPU/req N=2 vs N=1"),
]
STEPS = ("run", "sidecar", "pubsub", "state", "tracing", "cores", "rss")
LINE = re.compile(
    r"^TARGET (?P<name>.+?): (?P<value>.*) vs (?P<goal>.+) (?P<verdict>PASS|FAIL|SKIP)$"
)
STEP_MARK = re.compile(r"^== bench step (\w+): exit (-?\d+)$")


def command(step: str, seconds: int | None, rounds: int | None) -> list[str]:
    if step == "run":
        return ["bash", "bench/run.sh", *([str(seconds)] if seconds else [])]
    argv = [PY, f"bench/{step}.py", *(["--seconds", str(seconds)] if seconds else [])]
    if rounds and step in ("tracing", "cores"):
        argv += ["--rounds", str(rounds)]
    return argv


def run_step(argv: list[str], log: list[str]) -> int:
    """Run one script, its stdout passed through line by line and kept; stderr as it is."""
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.append(line.rstrip("\n"))
    return proc.returncode


def block(lines: list[str], header: str) -> tuple[list[str], bool]:
    """The summary block from a run's output; True if nothing is missing and no step failed."""
    found: dict[str, re.Match[str]] = {}
    exits: dict[str, int] = {}
    for line in lines:
        if m := LINE.match(line):
            found[m["name"]] = m
        elif m := STEP_MARK.match(line):
            exits[m[1]] = int(m[2])
    names = [name for _, name in EXPECTED]
    names += [name for name in found if name not in names]  # a script's own extra targets
    script = {name: step for step, name in EXPECTED}
    width = max(len(n) for n in names)
    out = [header]
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0, "MISSING": 0}
    for name in names:
        if name in found:
            m = found[name]
            counts[m["verdict"]] += 1
            out.append(f"  {m['verdict']:<7}  {name:<{width}}  {m['value']}  (goal {m['goal']})")
        else:
            counts["MISSING"] += 1
            step = script[name]
            path = "bench/run.sh" if step == "run" else f"bench/{step}.py"
            if step not in exits:
                why = f"{path} not run"
            elif exits[step]:
                why = f"{path} exited {exits[step]}"
            else:
                why = f"{path} printed no such line"
            out.append(f"  MISSING  {name:<{width}}  no figure ({why})")
    failed = sorted(step for step, code in exits.items() if code)
    out.append(
        "== " + ", ".join(f"{n} {k}" for k, n in counts.items())
        + (f"; scripts that failed: {', '.join(failed)}" if failed else "")
    )  # fmt: skip
    return out, not counts["MISSING"] and not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, help="per test, passed to every script")
    parser.add_argument("--rounds", type=int, help="passed to tracing.py and cores.py")
    parser.add_argument("--only", default=",".join(STEPS), help=f"of {','.join(STEPS)}")
    parser.add_argument("--from", dest="source", type=Path, help="summarise a saved log")
    args = parser.parse_args()
    if args.source:
        saved = args.source.read_text().splitlines()
        out, ok = block(saved, f"== Summary of {args.source}: the performance issue's targets")
        print("\n".join(out))
        return 0 if ok else 1
    steps = [s for s in args.only.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"unknown steps {unknown}; known: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    lines: list[str] = []
    for step in steps:
        argv = command(step, args.seconds, args.rounds)
        print(f"\n== bench step {step}: {' '.join(argv)}", flush=True)
        code = run_step(argv, lines)
        lines.append(f"== bench step {step}: exit {code}")
        print(lines[-1], flush=True)
    log = Path(tempfile.mkstemp(prefix="meshwire-bench-", suffix=".txt")[1])
    log.write_text("\n".join(lines) + "\n")
    header = f"== Summary: the performance issue's targets (run started {started}; output: {log})"
    out, ok = block(lines, header)
    print("\n" + "\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
