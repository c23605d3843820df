"""What the supervisor and its workers say to each other over two pipes (length + pickle)."""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass, field

import trio

from config import schema
from proxy.sidecar.role import SidecarRole
from proxy.tls.workload_cert import WorkloadCert

_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class WorkerSpec:
    """The first message a worker reads: everything it needs to build and serve its App."""

    index: int
    config: schema.Config  # every listener on the port its supervisor reserved; no admin
    admin_path: str  # the private Unix socket its supervisor scrapes
    sidecar_role: SidecarRole | None
    log_level: str
    log_as_json: bool
    app_id: str | None
    source: str  # what a build failure names: the config file, or "command line"
    origins: dict[str, str] = field(default_factory=dict)  # listener → where its address was set


# Supervisor → worker, after the spec.


@dataclass(frozen=True)
class Listen:
    """Every worker is ready: listen on the bound ports (so the first connections are spread
    over all of them, and none is accepted when one of them cannot start)."""


@dataclass(frozen=True)
class Drain:
    """Stop accepting and drain, as on SIGTERM."""


@dataclass(frozen=True)
class Renewed:
    """The supervisor renewed the workload certificate: present this one from now on."""

    certificate: WorkloadCert


# Worker → supervisor.


@dataclass(frozen=True)
class Ready:
    """Every listener is bound (listening once told to) and the App is up (a sidecar: its
    components too)."""


@dataclass(frozen=True)
class Failed:
    """Start-up failed; the lines say why, as the CLI would print them."""

    lines: list[str]


@dataclass(frozen=True)
class Quit:
    """The app asked this worker to shut the sidecar down (/v1.0/shutdown): stop them all."""


Message = WorkerSpec | Listen | Drain | Renewed | Ready | Failed | Quit


def frame(message: Message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_blocking(fd: int, message: Message) -> None:
    """Send from outside trio (a worker's few small status messages); a gone reader is ignored,
    since its process supervises this one no longer."""
    data = memoryview(frame(message))
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BrokenPipeError:
        pass


def read_blocking(fd: int) -> Message | None:
    """The next message, read outside trio; None at the end of the stream."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    if body is None:
        return None
    return _decode(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = os.read(fd, size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _decode(body: bytes) -> Message:
    message: Message = pickle.loads(body)  # our own child or parent: the same code, the same user
    return message


class Reader:
    """Messages from a pipe inside trio; None at the end of the stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> Message | None:
        header = await self._exactly(_HEADER.size)
        if header is None:
            return None
        body = await self._exactly(_HEADER.unpack(header)[0])
        return None if body is None else _decode(body)

    async def _exactly(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            chunk = await self._stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken
