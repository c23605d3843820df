"""The workers' stats as one process's: counters, gauges and histogram series summed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client.utils import floatToGoString

# Families describing the process rather than counting anything (OpenTelemetry's resource, as
# target_info): every worker has one, and the sum shows the first worker's alone.
_DESCRIPTIVE_SUFFIX = "_info"


class _Family:
    __slots__ = ("header", "name", "samples", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.header: list[str] = []  # HELP and TYPE, from the first exposition that has them
        self.samples: dict[str, list[str]] = {}  # series (name and labels) → values, in order
        self.source: int | None = None  # the first exposition with a sample of it

    def has(self, kind: str) -> bool:
        return any(line.split(" ", 3)[1] == kind for line in self.header)

    def add(self, position: int, series: str, value: str) -> None:
        if self.source is None:
            self.source = position
        elif position != self.source and self.name.endswith(_DESCRIPTIVE_SUFFIX):
            return
        self.samples.setdefault(series, []).append(value)


def sum_expositions(texts: Sequence[str]) -> str:
    """Prometheus text 0.0.4 expositions as one: each series (same name, same labels) summed,
    families and series in the order first seen. Counters and histogram buckets, sums and
    counts add up exactly; so do gauges of levels (connections, requests in flight)."""
    families: dict[str, _Family] = {}
    for position, text in enumerate(texts):
        current: _Family | None = None
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    current = families.setdefault(parts[2], _Family(parts[2]))
                    if not current.has(parts[1]):
                        current.header.append(line)
                continue
            if not line:
                continue
            series, _, value = line.rpartition(" ")
            if current is None:  # a sample with no header: a family of its own
                name = series.partition("{")[0]
                current = families.setdefault(name, _Family(name))
            current.add(position, series, value)
    out: list[str] = []
    for family in families.values():
        out.extend(family.header)
        out.extend(f"{series} {_sum(values)}" for series, values in family.samples.items())
    return "".join(line + "\n" for line in out)


def counting_part(text: str) -> str:
    """The families of an exposition that only ever grow (counters, histograms): what a
    worker that died had counted, which the sums keep; its gauges went with it."""
    kept: list[str] = []
    keep = False
    pending = ""  # a family's HELP line, until its TYPE says whether it is kept
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if line.startswith("# HELP "):
            keep = False
            pending = line
            continue
        if line.startswith("# TYPE ") and len(parts) == 4:
            keep = parts[3] in ("counter", "histogram")
            if keep:
                kept.extend((pending, line) if pending else (line,))
            pending = ""
            continue
        if keep and line and not line.startswith("#"):
            kept.append(line)
    return "".join(line + "\n" for line in kept)


def _sum(values: Iterable[str]) -> str:
    """Integers stay integers ("12"); otherwise the float as Prometheus' client writes it."""
    texts = list(values)
    try:
        return str(sum(int(text) for text in texts))
    except ValueError:
        total = sum(float(text) for text in texts)
        return str(floatToGoString(total))  # type: ignore[no-untyped-call]


Typed = list[tuple[str, int, str]]  # (name, value, "counter" | "gauge")


def sum_stats(lists: Iterable[Typed]) -> Typed:
    """Typed stats summed by name; names sorted, as /stats lists them."""
    totals: dict[str, tuple[int, str]] = {}
    for items in lists:
        for name, value, kind in items:
            totals[name] = (totals.get(name, (0, kind))[0] + value, kind)
    return [(name, value, kind) for name, (value, kind) in sorted(totals.items())]


def counters_only(items: Typed) -> Typed:
    """What a worker that died had counted (its gauges went with it)."""
    return [item for item in items if item[2] == "counter"]


def sum_clusters(snapshots: Iterable[list[dict[str, object]]]) -> list[dict[str, object]]:
    """/clusters snapshots as one: clusters by name, hosts by address; counts summed, a host
    healthy only where every worker finds it healthy."""
    clusters: dict[object, dict[str, object]] = {}
    for snapshot in snapshots:
        for cluster in snapshot:
            mine = clusters.get(cluster.get("name"))
            if mine is None:
                clusters[cluster.get("name")] = _copy(cluster)
                continue
            for key, value in cluster.items():
                if key == "hosts" and isinstance(value, list):
                    mine["hosts"] = _sum_hosts(mine.get("hosts"), value)
                else:
                    mine[key] = _add(mine.get(key), value)
    return list(clusters.values())


def _copy(cluster: dict[str, object]) -> dict[str, object]:
    copied = dict(cluster)
    hosts = cluster.get("hosts")
    if isinstance(hosts, list):
        copied["hosts"] = [dict(host) for host in hosts]
    return copied


def _sum_hosts(mine: object, theirs: list[dict[str, object]]) -> list[dict[str, object]]:
    hosts = {h.get("address"): h for h in mine} if isinstance(mine, list) else {}
    for host in theirs:
        known = hosts.get(host.get("address"))
        if known is None:
            hosts[host.get("address")] = dict(host)
        else:
            for key, value in host.items():
                known[key] = _add(known.get(key), value)
    return list(hosts.values())


def _add(mine: object, theirs: object) -> object:
    if isinstance(mine, bool) and isinstance(theirs, bool):
        return mine and theirs
    if isinstance(mine, int) and isinstance(theirs, int):
        return mine + theirs
    return mine if mine is not None else theirs
