"""Load a YAML config, reporting every structural and cross-reference problem at once."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec
import yaml

from config.schema import (
    Cluster,
    Config,
    Duration,
    Listener,
    RetryFilter,
    Route,
    TlsContext,
    UpstreamTls,
    parse_address,
)
from config.walk import Problem, check_structure, child
from filters.terminal import TERMINAL_FILTERS, is_terminal

__all__ = [
    "ConfigError",
    "Problem",
    "check_references",
    "format_problems",
    "load_file",
    "load_text",
]

_ALPN = ("h2", "http/1.1")
# Limits whose schema comment documents 0 as "off"; every other limit must be positive.
OFF_AT_ZERO = frozenset({"h1_chunk_budget"})
_WILDCARDS = frozenset({"0.0.0.0", "::", "*"})


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds every reason found."""

    def __init__(self, problems: Sequence[Problem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(format_problems(self.problems, source))


def format_problems(problems: Sequence[Problem], source: str) -> str:
    """One line per problem: "<source>: $.path: message" (the problem's own file, if it has one)."""
    return "\n".join(f"{p.source or source}: {p.path}: {p.message}" for p in problems)


def load_file(path: str | os.PathLike[str]) -> Config:
    """Read, parse and fully check a config file; relative cert paths resolve from its folder."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError([Problem("$", f"cannot read the file: {_reason(exc)}")], source) from None
    return load_text(data, source, base_dir=Path(source).parent)


def load_text(
    text: str | bytes, source: str = "<string>", *, base_dir: Path | None = None
) -> Config:
    """Parse and fully check YAML text (both passes); ConfigError lists every problem."""
    data, problems = _parse_yaml(text)
    if problems and data is None:
        raise ConfigError(problems, source)
    if data is None:
        raise ConfigError([Problem("$", "the configuration is empty")], source)
    structure = check_structure(data, Config)
    problems.extend(structure.problems)
    try:
        config = msgspec.convert(structure.repaired, Config, dec_hook=_dec_hook)
    except (msgspec.ValidationError, ValueError) as exc:  # the walker should have caught it
        raise ConfigError([*problems, Problem("$", str(exc))], source) from None
    for problem in check_references(config, base_dir):
        # A broken value was replaced by a placeholder; do not blame it a second time.
        if not any(_related(problem.path, path) for path in structure.suspect):
            problems.append(problem)
    if problems:
        raise ConfigError(problems, source)
    return config


def _dec_hook(cls: type, value: object) -> object:
    if cls is Duration:
        return Duration.parse(value)
    raise NotImplementedError(f"cannot build {cls.__name__}")


def _related(a: str, b: str) -> bool:
    """True when one path is the other or lies inside it."""
    short, long = sorted((a, b), key=len)
    return long.startswith(short) and (len(long) == len(short) or long[len(short)] in ".[")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Loader(yaml.SafeLoader):
    """SafeLoader that notes duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.duplicates: list[Problem] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                mark = key_node.start_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}"
                self.duplicates.append(Problem("$", f"{where}: duplicate key {key_node.value!r}"))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str | bytes) -> tuple[object, list[Problem]]:
    loader = _Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "syntax error"
        if mark is None:
            return None, [Problem("$", f"invalid YAML: {what}")]
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return None, [Problem("$", f"invalid YAML at {where}: {what}")]
    except yaml.YAMLError as exc:
        return None, [Problem("$", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()


def check_references(config: Config, base_dir: Path | None = None) -> list[Problem]:
    """Problems the types cannot express: references, exclusivity, ranges, files, addresses."""
    return _Checker(config, base_dir).problems


class _Checker:
    def __init__(self, config: Config, base_dir: Path | None) -> None:
        self.problems: list[Problem] = []
        self.base_dir = base_dir
        self.clusters = [c.name for c in config.clusters]
        if isinstance(config.concurrency, int) and config.concurrency < 0:
            self.add(
                "$.concurrency",
                f"must be a number of processes, 0 or auto (one per CPU), got {config.concurrency}",
            )
        self.bound: list[tuple[str, int, str]] = []  # host, port, path of the owner
        if config.admin is not None:
            self.address(config.admin.address, "$.admin.address", bind=True)
        seen: dict[str, str] = {}
        for i, listener in enumerate(config.listeners):
            path = child("$.listeners", i)
            self.unique(seen, listener.name, child(path, "name"), "listener name")
            self.listener(listener, path)
        seen = {}
        for i, cluster in enumerate(config.clusters):
            path = child("$.clusters", i)
            self.unique(seen, cluster.name, child(path, "name"), "cluster name")
            self.cluster(cluster, path)
        self.sidecar(config)

    def sidecar(self, config: Config) -> None:
        """Dapr mode's references: its app cluster, its internal listener, who needs it."""
        sidecar = config.sidecar
        for i, listener in enumerate(config.listeners):
            path = child("$.listeners", i)
            tags = [str(type(f).__struct_config__.tag) for f in listener.filters]
            needs = [t for t in tags if t.startswith("dapr_")]
            if listener.sidecar_mtls:
                needs.append("sidecar_mtls")
                if listener.tls is not None:
                    self.add(child(path, "tls"), "use either tls or sidecar_mtls, not both")
            if needs and sidecar is None:
                self.add(path, f"{', '.join(needs)} needs the top-level sidecar section")
        if sidecar is None:
            return
        if sidecar.app is not None:
            self.cluster_ref(sidecar.app.cluster, "$.sidecar.app.cluster")
        names = [listener.name for listener in config.listeners]
        if sidecar.internal_listener not in names:
            self.add(
                "$.sidecar.internal_listener",
                f"no listener named {sidecar.internal_listener!r} (other sidecars call it)",
            )

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def unique(self, seen: dict[str, str], name: str, path: str, what: str) -> None:
        if name in seen:
            self.add(path, f"duplicate {what} {name!r} (also at {seen[name]})")
        else:
            seen[name] = path

    def address(self, text: str, path: str, *, bind: bool) -> None:
        try:
            host, port = parse_address(text)
        except ValueError as exc:
            self.add(path, str(exc))
            return
        if not bind:
            if port == 0:
                self.add(path, f"port 0 cannot be connected to in {text!r}")
            return
        for other_host, other_port, owner in self.bound:
            same_host = host == other_host or host in _WILDCARDS or other_host in _WILDCARDS
            if port != 0 and port == other_port and same_host:
                self.add(path, f"address already used by {owner}")
                return
        self.bound.append((host, port, path.rpartition(".")[0]))

    def readable(self, name: str, path: str) -> None:
        file = Path(name)
        if self.base_dir is not None and not file.is_absolute():
            file = self.base_dir / file
        try:
            with open(file, "rb"):
                pass
        except OSError as exc:
            self.add(path, f"cannot read {str(file)!r}: {_reason(exc)}")

    def positive(self, value: float, path: str) -> None:
        if value <= 0:
            self.add(path, f"must be positive, got {value:g}")

    def listener(self, listener: Listener, path: str) -> None:
        self.address(listener.address, child(path, "address"), bind=True)
        if not listener.protocols:
            self.add(child(path, "protocols"), "at least one protocol is needed (http1, h2c)")
        if listener.xff_num_trusted_hops < 0:
            hops = listener.xff_num_trusted_hops
            self.add(child(path, "xff_num_trusted_hops"), f"must not be negative, got {hops}")
        if listener.tls is not None:
            self.server_tls(listener.tls, child(path, "tls"))
        self.filters(listener, path)
        seen: dict[str, str] = {}
        for i, route in enumerate(listener.routes):
            where = child(child(path, "routes"), i)
            if route.name is not None:
                self.unique(seen, route.name, child(where, "name"), "route name")
            self.route(route, where)
        limits = child(path, "limits")
        for field in msgspec.structs.fields(listener.limits):
            value = getattr(listener.limits, field.name)
            if field.name in OFF_AT_ZERO:
                if value < 0:
                    self.add(child(limits, field.name), f"must not be negative, got {value:g}")
            else:
                self.positive(value, child(limits, field.name))
        if listener.limits.overload_threshold > 1:
            self.add(child(limits, "overload_threshold"), "a share of max_connections: at most 1")

    def server_tls(self, tls: TlsContext, path: str) -> None:
        self.readable(tls.cert_file, child(path, "cert_file"))
        self.readable(tls.key_file, child(path, "key_file"))
        if tls.ca_file is not None:
            self.readable(tls.ca_file, child(path, "ca_file"))
        elif tls.require_client_cert:
            self.add(
                child(path, "require_client_cert"), "needs ca_file to verify client certificates"
            )
        if not tls.alpn:
            self.add(child(path, "alpn"), "at least one ALPN protocol is needed (h2, http/1.1)")
        for i, proto in enumerate(tls.alpn):
            if proto not in _ALPN:
                self.add(
                    child(child(path, "alpn"), i), f"must be one of h2, http/1.1, got {proto!r}"
                )

    def filters(self, listener: Listener, path: str) -> None:
        filters_path = child(path, "filters")
        tags = [str(type(f).__struct_config__.tag) for f in listener.filters]
        terminals = [i for i, tag in enumerate(tags) if is_terminal(tag)]
        if not terminals:
            names = ", ".join(sorted(TERMINAL_FILTERS))
            self.add(filters_path, f"the chain must end with a terminal filter ({names})")
        for n, i in enumerate(terminals):
            where = child(filters_path, i)
            if n > 0:
                first = child(filters_path, terminals[0])
                self.add(where, f"only one terminal filter is allowed; {tags[i]!r} follows {first}")
            elif i != len(tags) - 1:
                self.add(where, f"terminal filter {tags[i]!r} must be the last filter")
        for i, f in enumerate(listener.filters):
            limit = getattr(f, "max_request_bytes", None)
            if isinstance(limit, int):
                self.positive(limit, child(child(filters_path, i), "max_request_bytes"))
            if isinstance(f, RetryFilter):
                self.retry(f, child(filters_path, i))
        if "router" in tags and not listener.routes:
            self.add(child(path, "routes"), "the router filter needs at least one route")

    def retry(self, f: RetryFilter, path: str) -> None:
        if f.num_retries < 0:
            self.add(child(path, "num_retries"), f"must be >= 0, got {f.num_retries}")
        if f.per_try_timeout < 0:
            self.add(child(path, "per_try_timeout"), f"must be >= 0, got {f.per_try_timeout:g}")
        self.positive(f.base_interval, child(path, "base_interval"))
        if f.max_interval is not None:
            self.positive(f.max_interval, child(path, "max_interval"))
            if f.max_interval < f.base_interval:
                self.add(
                    child(path, "max_interval"),
                    f"must be >= base_interval ({f.base_interval:g}s), got {f.max_interval:g}s",
                )
        codes = child(path, "retriable_status_codes")
        for i, code in enumerate(f.retriable_status_codes):
            if not 100 <= code <= 599:
                self.add(child(codes, i), f"must be 100-599, got {code}")
        if f.retriable_status_codes and "retriable-status-codes" not in f.retry_on:
            self.add(codes, "only used when retry_on lists retriable-status-codes")
        if "retriable-status-codes" in f.retry_on and not f.retriable_status_codes:
            self.add(codes, "retry_on lists retriable-status-codes, so list at least one code")
        if not f.retry_on:
            self.add(child(path, "retry_on"), "needs at least one condition")
        if not f.stat_prefix:
            self.add(child(path, "stat_prefix"), "must not be empty")
        budget = f.retry_budget
        if budget is not None:
            where = child(path, "retry_budget")
            if not 0 <= budget.budget_percent <= 100:
                percent = budget.budget_percent
                self.add(child(where, "budget_percent"), f"must be 0-100, got {percent:g}")
            if budget.min_retry_concurrency < 0:
                count = budget.min_retry_concurrency
                self.add(child(where, "min_retry_concurrency"), f"must be >= 0, got {count}")

    def route(self, route: Route, path: str) -> None:
        actions = [
            name
            for name, value in (
                ("cluster", route.cluster),
                ("weighted_clusters", route.weighted_clusters),
                ("direct_response", route.direct_response),
            )
            if value is not None
        ]
        if len(actions) != 1:
            found = " and ".join(actions) if actions else "none"
            self.add(
                path,
                f"a route needs exactly one of cluster, weighted_clusters, direct_response "
                f"(found {found})",
            )
        if route.cluster is not None:
            self.cluster_ref(route.cluster, child(path, "cluster"))
        if route.weighted_clusters is not None:
            weighted = child(path, "weighted_clusters")
            if not route.weighted_clusters:
                self.add(weighted, "needs at least one cluster")
            for i, wc in enumerate(route.weighted_clusters):
                self.cluster_ref(wc.name, child(child(weighted, i), "name"))
                if wc.weight <= 0:
                    self.add(child(child(weighted, i), "weight"), f"must be > 0, got {wc.weight}")
        if route.direct_response is not None and not 100 <= route.direct_response.status <= 599:
            status = route.direct_response.status
            self.add(
                child(child(path, "direct_response"), "status"), f"must be 100-599, got {status}"
            )
        if route.timeout < 0:
            self.add(child(path, "timeout"), f"must be >= 0, got {route.timeout:g}")
        match = route.match
        where = child(path, "match")
        given = [k for k in ("path", "prefix", "regex") if getattr(match, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            self.add(where, f"needs exactly one of path, prefix, regex (found {found})")
        if match.regex is not None:
            self.regex(match.regex, child(where, "regex"))
        for i, header in enumerate(match.headers):
            hpath = child(child(where, "headers"), i)
            kinds = ("exact", "prefix", "regex", "present")
            given = [k for k in kinds if getattr(header, k) is not None]
            if len(given) != 1:
                found = " and ".join(given) if given else "none"
                self.add(
                    hpath, f"needs exactly one of exact, prefix, regex, present (found {found})"
                )
            if header.regex is not None:
                self.regex(header.regex, child(hpath, "regex"))
            if not header.name:
                self.add(child(hpath, "name"), "must not be empty")

    def regex(self, pattern: str, path: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.add(path, f"invalid regex {pattern!r}: {exc}")

    def cluster_ref(self, name: str, path: str) -> None:
        if name not in self.clusters:
            known = ", ".join(dict.fromkeys(self.clusters)) or "none are defined"
            self.add(path, f"unknown cluster {name!r} (clusters: {known})")

    def cluster(self, cluster: Cluster, path: str) -> None:
        if not cluster.endpoints:
            self.add(child(path, "endpoints"), "a cluster needs at least one endpoint")
        for i, endpoint in enumerate(cluster.endpoints):
            self.address(endpoint, child(child(path, "endpoints"), i), bind=False)
        if cluster.tls is not None:
            if cluster.protocol == "h2c":
                self.add(child(path, "tls"), "h2c is cleartext HTTP/2; use protocol h2 with tls")
            self.client_tls(cluster.tls, child(path, "tls"))
        for name in ("max_connections", "max_requests", "max_concurrent_streams"):
            self.positive(getattr(cluster, name), child(path, name))
        self.positive(cluster.connect_timeout, child(path, "connect_timeout"))

    def client_tls(self, tls: UpstreamTls, path: str) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is not None:
                self.readable(value, child(path, name))
        if (tls.cert_file is None) != (tls.key_file is None):
            self.add(path, "cert_file and key_file must be given together")
