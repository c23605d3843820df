"""`meshwire ca init [DIR]` creates (or shows) the embedded CA; `ca serve` signs with it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import trio

from config.base import Duration, parse_address
from exporters import process_log
from proxy.sidecar.options import default_data_dir
from proxy.tls.errors import CaError

if TYPE_CHECKING:
    from proxy.tls.signing_server import SigningService

EXIT_FAILED = 1

log = logging.getLogger("meshwire.ca")


def add_ca_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser(
        "ca",
        help="manage the embedded certificate authority",
        description="The CA sidecars on one host share: ca.crt (root), issuer.crt, issuer.key.",
    )
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    init = ca_sub.add_parser(
        "init",
        help="create a root and an issuer in DIR (kept if they exist)",
        description="Create the CA in DIR, or load and show it. DIR defaults to where sidecars "
        "look for it: $MESHWIRE_DATA_DIR/ca, else ~/.meshwire/ca.",
    )
    init.add_argument("directory", metavar="DIR", nargs="?", help="the CA's folder")
    init.add_argument("--trust-domain", default="public", help="SPIFFE trust domain (public)")
    serve = ca_sub.add_parser(
        "serve",
        help="sign workload certificates for sidecars on other hosts (HTTPS)",
        description="Serve POST /v1/sign over TLS: sidecars started with --sentry-address send "
        "a CSR and a token from --token-file and get a certificate for their app id.",
    )
    serve.add_argument("--ca-dir", required=True, metavar="DIR", help="created if missing")
    serve.add_argument("--listen", required=True, metavar="HOST:PORT")
    serve.add_argument(
        "--token-file",
        required=True,
        metavar="FILE",
        help="one `TOKEN APP[.NAMESPACE] ...` or `TOKEN *` per line",
    )
    serve.add_argument("--trust-domain", default="public", help="SPIFFE trust domain (public)")
    serve.add_argument(
        "--hostname", help="DNS name in the service's certificate (default: the --listen host)"
    )
    serve.add_argument("--ttl", default="24h", help="workload certificate lifetime (24h)")


def run_ca_command(args: argparse.Namespace) -> int:
    # The CA's modules import cryptography: only these commands load them, not `meshwire run`.
    from proxy.tls.ca import CertificateAuthority

    if args.ca_command == "serve":
        return _serve(args)
    if args.directory is None:
        args.directory = str(default_data_dir(os.environ) / "ca")
    try:
        ca = CertificateAuthority.init(args.directory, args.trust_domain)
    except (CaError, OSError, ValueError) as exc:
        print(f"meshwire ca init: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.directory}: trust domain {ca.trust_domain}, issuer valid until "
          f"{ca.issuer_not_after.isoformat()}")  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from proxy.tls.ca import CertificateAuthority
    from proxy.tls.signing_server import SigningService, TokenTable

    process_log.configure("info", as_json=False)
    try:
        host, port = parse_address(args.listen)
        ttl = timedelta(seconds=Duration.parse(args.ttl))
        if ttl <= timedelta(0):
            raise ValueError(f"--ttl must be positive, got {args.ttl!r}")
        ca = CertificateAuthority.init(args.ca_dir, args.trust_domain)
        service = SigningService(
            ca,
            TokenTable.load(args.token_file),
            args.trust_domain,
            hostname=args.hostname or host,
            ttl=ttl,
        )
    except (CaError, OSError, ValueError) as exc:
        print(f"meshwire ca serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        trio.run(_serve_until_signal, service, host, port)
    except OSError as exc:
        print(f"meshwire ca serve: {args.listen}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


async def _serve_until_signal(service: SigningService, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            bound_host, bound_port = await nursery.start(service.serve, host, port)
            log.info(
                "signing for trust domain %s as %s on https://%s:%d",
                service.trust_domain,
                service.spiffe_id,
                bound_host,
                bound_port,
            )
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
