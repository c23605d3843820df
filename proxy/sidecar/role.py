"""What one process of a sidecar does: all of it alone, or its share as a --concurrency worker."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.tls.workload_cert import WorkloadCert


@dataclass(frozen=True)
class SidecarRole:
    """The default is the whole sidecar in one process."""

    # The workload certificate the supervisor got from the CA: a worker neither asks the CA
    # nor renews it (the supervisor pushes each renewal), so the group is one identity.
    # None: this process gets its own certificate and renews it.
    certificate: WorkloadCert | None = None
    # Publish the internal port in name resolution: the supervisor does, once for the group.
    registers: bool = True
    # Do what must happen once per sidecar: consume the app's subscriptions (one consumer,
    # so each event reaches the app once) and sweep the state stores' expired keys.
    leader: bool = True
