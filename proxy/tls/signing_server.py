"""`meshwire ca serve`: an HTTPS service that signs workload CSRs for sidecars holding a token."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import ssl
from datetime import timedelta
from functools import partial

import h11
import trio

from proxy.tls.ca import CertificateAuthority
from proxy.tls.contexts import load_chain
from proxy.tls.errors import CaError, InvalidCsrError, WorkloadCertError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.tokens import TokenTable as TokenTable
from proxy.tls.workload import MAX_CHECK_INTERVAL, RETRY_INTERVAL
from proxy.tls.workload_cert import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_WORKLOAD_TTL,
    Clock,
    WorkloadCert,
    utc_now,
)

log = logging.getLogger("meshwire.ca")

SIGN_PATH = "/v1/sign"
HEALTH_PATH = "/healthz"
SERVICE_NAMESPACE = "meshwire-system"
SERVICE_APP_ID = "meshwire-ca"
MAX_BODY = 64 * 1024
MAX_HEADERS = 16 * 1024
REQUEST_TIMEOUT = 10.0
# After an early error reply, read (and drop) what the client is still sending for a while, so
# closing with unread data does not reset the connection before the client reads the reply.
DRAIN_LIMIT = 1 << 20
DRAIN_TIMEOUT = 1.0


def service_id(trust_domain: str) -> SpiffeId:
    """The SPIFFE id the signing service presents, which sidecars insist on."""
    return SpiffeId(trust_domain, SERVICE_NAMESPACE, SERVICE_APP_ID)


class _Reply(Exception):
    """An HTTP error answer, raised where the request is found wanting."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SigningService:
    """Signs CSRs over HTTPS with a CA; its own certificate comes from that CA and is renewed."""

    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: TokenTable,
        trust_domain: str,
        *,
        hostname: str | None = None,
        ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        timeout: float = REQUEST_TIMEOUT,
        max_body: int = MAX_BODY,
        clock: Clock = utc_now,
    ) -> None:
        self.trust_domain = trust_domain
        self.spiffe_id = service_id(trust_domain)
        self._ca, self._tokens = ca, tokens
        self._ttl, self._skew, self._timeout, self._max_body = ttl, clock_skew, timeout, max_body
        self._clock = clock
        self._dns_names = (hostname,) if hostname and not _is_ip(hostname) else ()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.set_alpn_protocols(["http/1.1"])
        self._cert = self._issue_own()
        load_chain((self._context,), self._cert)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        """Listen on host:port and serve (renewing our certificate) until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew_forever)
            await nursery.start(trio.serve_listeners, self._on_connection, listeners)
            task_status.started((bound[0], bound[1]))

    def _issue_own(self) -> WorkloadCert:
        return self._ca.issue(self.spiffe_id, self._ttl, self._skew, self._dns_names)

    async def _renew_forever(self) -> None:
        while True:
            # As for workload certificates: renew at half-life, re-reading the wall clock.
            remaining = (self._cert.half_life - self._clock()).total_seconds()
            if remaining > 0:
                await trio.sleep(min(remaining, MAX_CHECK_INTERVAL))
                continue
            try:
                cert = await trio.to_thread.run_sync(self._issue_own)
                load_chain((self._context,), cert)
            except (CaError, WorkloadCertError, ValueError) as exc:
                log.warning("renewing the signing service's certificate failed: %s", exc)
                await trio.sleep(RETRY_INTERVAL)
            else:
                self._cert = cert

    async def _on_connection(self, tcp: trio.SocketStream) -> None:
        host, port = tcp.socket.getpeername()[:2]
        peer = f"{host}:{port}"
        tls = trio.SSLStream(tcp, self._context, server_side=True, https_compatible=True)
        try:
            with trio.move_on_after(self._timeout):
                await tls.do_handshake()
                await self._exchange(tls, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
            log.debug("connection from %s ended: %r", peer, exc)
        except Exception:  # one bad request must not stop the service for every sidecar
            log.exception("serving %s failed", peer)
        finally:
            # With https_compatible, aclose sends close_notify without waiting for the peer's;
            # even when cancelled by the deadline it still closes the socket.
            with trio.move_on_after(DRAIN_TIMEOUT), contextlib.suppress(trio.BrokenResourceError):
                await tls.aclose()

    async def _exchange(self, stream: trio.SSLStream[trio.SocketStream], peer: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        try:
            request = await _next(conn, stream)
            if not isinstance(request, h11.Request):
                return
            status, answer = await self._route(conn, stream, request, peer)
        except _Reply as reply:
            status, answer = reply.status, {"error": reply.code, "message": reply.message}
        except h11.RemoteProtocolError as exc:
            status, answer = 400, {"error": "bad_request", "message": str(exc)}
        await _respond(conn, stream, status, answer)
        if conn.their_state is not h11.DONE:
            with trio.move_on_after(DRAIN_TIMEOUT):
                drained = 0
                while drained < DRAIN_LIMIT and (data := await stream.receive_some()):
                    drained += len(data)

    async def _route(
        self,
        conn: h11.Connection,
        stream: trio.SSLStream[trio.SocketStream],
        request: h11.Request,
        peer: str,
    ) -> tuple[int, dict[str, str] | None]:
        body = await self._body(conn, stream, request)
        target = request.target.decode("ascii", "replace").split("?", 1)[0]
        if target == HEALTH_PATH and request.method == b"GET":
            return 204, None
        if target != SIGN_PATH:
            raise _Reply(404, "not_found", f"no such path {target!r}")
        if request.method != b"POST":
            raise _Reply(405, "method_not_allowed", f"{SIGN_PATH} takes POST")
        return 200, await self._sign(body, peer)

    async def _body(
        self, conn: h11.Connection, stream: trio.SSLStream[trio.SocketStream], request: h11.Request
    ) -> bytes:
        too_large = _Reply(413, "too_large", f"request body is over {self._max_body} bytes")
        for name, value in request.headers:
            if name == b"content-length" and int(value) > self._max_body:
                raise too_large
        body = bytearray()
        while isinstance(event := await _next(conn, stream), h11.Data):
            body += event.data
            if len(body) > self._max_body:
                raise too_large
        return bytes(body)

    async def _sign(self, body: bytes, peer: str) -> dict[str, str]:
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Reply(400, "bad_request", "request body is not JSON") from None
        if not isinstance(fields, dict):
            raise _Reply(400, "bad_request", "request body must be a JSON object")
        token = fields.get("token")
        grant = self._tokens.authenticate(token) if isinstance(token, str) and token else None
        if grant is None:
            log.warning("refused a signing request from %s: missing or unknown token", peer)
            raise _Reply(401, "unauthenticated", "missing or unknown token")
        app_id, namespace = _text(fields, "app_id"), _text(fields, "namespace", "default")
        csr, trust_domain = _text(fields, "csr"), _text(fields, "trust_domain", self.trust_domain)
        if trust_domain != self.trust_domain:
            raise _Reply(403, "forbidden", f"this CA signs for trust domain {self.trust_domain}")
        try:
            spiffe_id = SpiffeId(self.trust_domain, namespace, app_id)
        except ValueError as exc:
            raise _Reply(400, "bad_request", str(exc)) from None
        if not grant.any_app and (namespace, app_id) not in grant.apps:
            log.warning("refused to sign for %s from %s: token not allowed", spiffe_id, peer)
            raise _Reply(403, "forbidden", f"this token may not sign for {spiffe_id}")
        sign = partial(self._ca.sign_csr, csr.encode(), spiffe_id, self._ttl, self._skew)
        try:
            signed = await trio.to_thread.run_sync(sign)
        except InvalidCsrError as exc:
            raise _Reply(400, "bad_csr", str(exc)) from None
        except CaError as exc:
            log.error("cannot sign for %s: %s", spiffe_id, exc)
            raise _Reply(503, "ca_unavailable", "the CA cannot sign right now") from None
        log.info(
            "signed %s for %s (serial %x, valid until %s)",
            spiffe_id,
            peer,
            signed.serial,
            signed.not_after.isoformat(),
        )
        return {
            "workload_certificate": signed.cert_chain_pem.decode(),
            "trust_chain": signed.trust_anchors_pem.decode(),
            "valid_until": signed.not_after.isoformat().replace("+00:00", "Z"),
        }


def _text(fields: dict[str, object], name: str, default: str | None = None) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise _Reply(400, "bad_request", f"{name}: expected a string")
    return value


async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some()))


async def _respond(
    conn: h11.Connection, stream: trio.abc.Stream, status: int, answer: dict[str, str] | None
) -> None:
    body = b"" if answer is None else json.dumps(answer).encode()
    headers = [("connection", "close")]
    if status != 204:
        headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return  # the request was too broken to answer
    await stream.send_all(data)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
