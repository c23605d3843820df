"""A tiny authoritative DNS server over UDP on 127.0.0.1, for the dns resolver's tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import trio


@dataclass
class DnsServer:
    """Answers from `records`: (name, type) -> values in zone-file syntax; other names NXDOMAIN.

    `glue` adds A records for SRV targets to the additional section; `servfail` makes every
    answer SERVFAIL. `queries` counts what was asked, by (name, type).
    """

    ttl: int = 30
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    glue: dict[str, list[str]] = field(default_factory=dict)
    servfail: bool = False
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)
    port: int = 0

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.records.setdefault((_absolute(name), rdtype), []).extend(values)

    def add_glue(self, name: str, *addresses: str) -> None:
        self.glue.setdefault(_absolute(name), []).extend(addresses)

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            task_status.started()
            while True:
                wire, client = await sock.recvfrom(4096)
                await sock.sendto(self._answer(wire), client)

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        if self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in self.records:
            values = self.records[(name, rdtype)]
            response.answer.append(dns.rrset.from_text(name, self.ttl, "IN", rdtype, *values))
            if rdtype == "SRV":
                for value in values:
                    target = _absolute(value.split()[-1])
                    if target in self.glue:
                        response.additional.append(
                            dns.rrset.from_text(target, self.ttl, "IN", "A", *self.glue[target])
                        )
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


def _absolute(name: str) -> str:
    return dns.name.from_text(name).to_text()
