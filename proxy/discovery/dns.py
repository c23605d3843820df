"""The `dns` resolver: A/AAAA or SRV records of a per-app name (Kubernetes headless services)."""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.resolver
import trio

from config.base import parse_address
from proxy.discovery.base import Instance, ResolutionError
from proxy.discovery.cache import AnswerCache
from proxy.discovery.settings import ConfigReader

__all__ = ["DnsResolver", "DnsSettings"]

MIN_TTL = 1.0  # answers are cached for their TTL clamped to [MIN_TTL, MAX_TTL]
MAX_TTL = 30.0
GETADDRINFO_TTL = 5.0  # getaddrinfo reports no TTL; 5 s is CoreDNS's default for cluster records

# Only names that are one DNS label each are looked up, so an app id cannot steer the query
# to a name outside the template (RFC 1123 labels; "_" tolerated as resolvers do).
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NOT_FOUND = {
    code
    for code in (
        getattr(socket, "EAI_NONAME", None),
        getattr(socket, "EAI_NODATA", None),
        getattr(socket, "EAI_ADDRFAMILY", None),
    )
    if code is not None
}


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """Where an app's sidecars are published in DNS."""

    template: str = "{app_id}-dapr.{namespace}.svc.cluster.local"
    port: int = 50002  # for A/AAAA answers; SRV answers carry their own port
    srv: bool = False
    srv_template: str = "_dapr-internal._tcp.{app_id}-dapr.{namespace}.svc.cluster.local"
    nameservers: tuple[tuple[str, int], ...] = ()  # () = the system's (/etc/resolv.conf)
    timeout: float = 2.0  # for one lookup, all retries included


class DnsResolver:
    """Resolve through DNS; nothing to register (the platform publishes the records).

    Without `nameservers`, A/AAAA lookups use the system resolver (trio's getaddrinfo, so
    /etc/hosts works too) and SRV lookups go through dnspython with /etc/resolv.conf. With
    `nameservers`, every lookup goes through dnspython to those servers. SRV answers: only the
    lowest priority is used (RFC 2782); weights are ignored, the load balancer spreads load.
    """

    def __init__(self, settings: DnsSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._cache = AnswerCache(clock)

    @classmethod
    def from_config(
        cls, configuration: Mapping[str, object], *, clock: Callable[[], float] = time.monotonic
    ) -> DnsResolver:
        reader = ConfigReader("dns", configuration)
        defaults = DnsSettings()
        settings = DnsSettings(
            template=_template(reader, "template", defaults.template),
            port=reader.integer("port", defaults.port, minimum=1, maximum=65535),
            srv=reader.boolean("srv", defaults.srv),
            srv_template=_template(reader, "srvTemplate", defaults.srv_template),
            nameservers=tuple(
                _nameserver(reader, text) for text in reader.string_list("nameservers")
            ),
            timeout=reader.duration("timeout", defaults.timeout, minimum=0.001),
        )
        reader.finish()
        return cls(settings, clock=clock)

    async def resolve(self, app_id: str, namespace: str) -> list[Instance]:
        if not (_LABEL.fullmatch(app_id) and _LABEL.fullmatch(namespace)):
            return []
        cached = self._cache.get((app_id, namespace))
        if cached is not None:
            return cached
        if self.settings.srv:
            instances, ttl = await self._from_srv(app_id, namespace)
        else:
            name = self.settings.template.format(app_id=app_id, namespace=namespace)
            hosts, ttl = await self._addresses(name)
            instances = [Instance(app_id, namespace, host, self.settings.port) for host in hosts]
        self._cache.put((app_id, namespace), instances, min(max(ttl, MIN_TTL), MAX_TTL))
        return instances

    async def register(self, instance: Instance) -> None:
        """Nothing to announce: the platform publishes our records."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def aclose(self) -> None:
        """Nothing to leave."""

    def invalidate(self, app_id: str, namespace: str) -> None:
        self._cache.forget((app_id, namespace))

    async def _from_srv(self, app_id: str, namespace: str) -> tuple[list[Instance], float]:
        name = self.settings.srv_template.format(app_id=app_id, namespace=namespace)
        answer = await self._query(name, "SRV")
        if answer is None or answer.rrset is None:
            return [], MIN_TTL
        ttl = float(answer.rrset.ttl)
        # RFC 2782: a lone target of "." says the service is decidedly not available here.
        records = [
            record
            for record in answer.rrset
            if isinstance(record, dns.rdtypes.IN.SRV.SRV) and record.target != dns.name.root
        ]
        if not records:
            return [], ttl
        lowest = min(record.priority for record in records)
        chosen = sorted(
            (record for record in records if record.priority == lowest),
            key=lambda record: (record.target.to_text(), record.port),
        )
        glue = _glue(answer.response)
        instances: list[Instance] = []
        for record in chosen:
            found = glue.get(record.target)
            if found is None:
                found = await self._addresses(record.target.to_text(omit_final_dot=True))
            hosts, host_ttl = found
            ttl = min(ttl, host_ttl)
            for host in hosts:
                instance = Instance(app_id, namespace, host, record.port)
                if instance not in instances:
                    instances.append(instance)
        return instances, ttl

    async def _addresses(self, name: str) -> tuple[list[str], float]:
        """The IPv4 then IPv6 addresses of a name, and how long they may be cached."""
        if not self.settings.nameservers:
            return await self._getaddrinfo(name), GETADDRINFO_TTL
        hosts: list[str] = []
        ttls: list[float] = []
        for rdtype in ("A", "AAAA"):
            answer = await self._query(name, rdtype)
            if answer is None or answer.rrset is None:
                continue
            ttls.append(float(answer.rrset.ttl))
            # An rrset has no order (servers rotate it); sorted, the list is stable.
            found = {address for address in map(_address_of, answer.rrset) if address}
            hosts.extend(sorted(found, key=ipaddress.ip_address))
        return hosts, min(ttls, default=MIN_TTL)

    async def _getaddrinfo(self, name: str) -> list[str]:
        try:
            infos = await trio.socket.getaddrinfo(name, self.settings.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in _NOT_FOUND:
                return []
            raise ResolutionError(f"dns name resolution: {name}: {exc}") from exc
        except UnicodeError:  # the IDNA codec refuses the name (an over-long label, say)
            return []
        hosts: list[str] = []
        for _family, _type, _proto, _canonical, sockaddr in infos:
            host = str(sockaddr[0])
            if host not in hosts:
                hosts.append(host)
        return hosts

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """One dnspython lookup on a worker thread; None for NXDOMAIN."""
        try:
            return await trio.to_thread.run_sync(
                self._query_in_thread, name, rdtype, abandon_on_cancel=True
            )
        except dns.exception.DNSException as exc:
            raise ResolutionError(f"dns name resolution: {rdtype} {name}: {exc}") from exc

    def _query_in_thread(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        if self.settings.nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in self.settings.nameservers
            ]
        else:
            resolver = dns.resolver.Resolver()  # reads /etc/resolv.conf
        resolver.lifetime = self.settings.timeout
        try:
            return resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None


def _glue(response: dns.message.Message) -> dict[dns.name.Name, tuple[list[str], float]]:
    """Addresses the server sent along in the additional section, by owner name."""
    glue: dict[dns.name.Name, tuple[list[str], float]] = {}
    for rrset in response.additional:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        hosts, ttl = glue.get(rrset.name, ([], float(rrset.ttl)))
        found = {address for address in map(_address_of, rrset) if address}
        hosts.extend(sorted(found, key=ipaddress.ip_address))
        glue[rrset.name] = (hosts, min(ttl, float(rrset.ttl)))
    return glue


def _address_of(record: object) -> str | None:
    if isinstance(record, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return str(record.address)
    return None


def _template(reader: ConfigReader, key: str, default: str) -> str:
    template = reader.string(key, default)
    if "{app_id}" not in template:
        raise reader.error(key, f"must contain {{app_id}}, got {template!r}")
    try:
        template.format(app_id="app", namespace="default")
    except (KeyError, IndexError, ValueError) as exc:
        raise reader.error(key, f"only {{app_id}} and {{namespace}} may be used: {exc}") from None
    return template


def _nameserver(reader: ConfigReader, text: str) -> tuple[str, int]:
    """ "10.0.0.10", "127.0.0.1:5353", "::1" or "[::1]:5353"; port 53 when none is given."""
    try:
        if text.startswith("[") or text.count(":") == 1:
            host, port = parse_address(text)
        else:
            host, port = text, 53
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise reader.error(
            "nameservers", f"expected an IP address with optional port: {exc}"
        ) from None
    return host, port
