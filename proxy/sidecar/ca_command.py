"""`meshwire ca init DIR`: create (or show) the embedded CA that sidecars sign from."""

from __future__ import annotations

import argparse
import sys

from proxy.tls.ca import CertificateAuthority
from proxy.tls.errors import CaError

EXIT_FAILED = 1


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
        description="Create the CA in DIR (default ~/.meshwire/ca), or load and show it.",
    )
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--trust-domain", default="public", help="SPIFFE trust domain (public)")


def run_ca_command(args: argparse.Namespace) -> int:
    try:
        ca = CertificateAuthority.init(args.directory, args.trust_domain)
    except (CaError, OSError, ValueError) as exc:
        print(f"meshwire ca init: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.directory}: trust domain {ca.trust_domain}, issuer valid until "
          f"{ca.issuer_not_after.isoformat()}")  # fmt: skip
    return 0
