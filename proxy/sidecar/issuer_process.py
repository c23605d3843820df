"""Workload certificates issued in a child process, so the sidecar never imports cryptography."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from config.base import Duration
from config.sidecar import Mtls
from proxy.tls.errors import CaError, WorkloadCertError
from proxy.tls.spiffe import SpiffeId
from proxy.tls.workload_cert import WorkloadCert

__all__ = ["ISSUE_TIMEOUT", "ChildIssuer", "main"]

ISSUE_TIMEOUT = 120.0  # seconds for one child to answer (a CA created, a signing service asked)

# What the child reports, re-raised here with its message: what start-up and rotation expect
# of the in-process issuers (the CLI shows CaError, OSError and ValueError as one line).
_ERRORS: dict[str, type[Exception]] = {
    "CaError": CaError,
    "WorkloadCertError": WorkloadCertError,
    "OSError": OSError,
    "ValueError": ValueError,
}


class ChildIssuer:
    """An Issuer (SpiffeId → WorkloadCert) that runs `python -m proxy.sidecar.issuer_process`
    once per certificate. The child builds the issuer `mtls` and `environ` name
    (identity.local_issuer: the signing service, the operator's CA or the CA directory, leaf
    checked), issues, and answers on stdout with the certificate or the error, and the log
    records issuing wrote, which are logged here again. Blocking, like the in-process issuers.
    """

    def __init__(self, mtls: Mtls, environ: Mapping[str, str]) -> None:
        self._request = {
            "ca_dir": mtls.ca_dir,
            "trust_domain": mtls.trust_domain,
            "workload_cert_ttl": float(mtls.workload_cert_ttl),
            "allowed_clock_skew": float(mtls.allowed_clock_skew),
            "sentry_address": mtls.sentry_address,
            "environ": dict(environ),
        }

    def __call__(self, spiffe_id: SpiffeId) -> WorkloadCert:
        request = {
            **self._request,
            "spiffe_id": str(spiffe_id),
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        try:
            done = subprocess.run(
                [sys.executable, "-m", __name__],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=ISSUE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CaError(
                f"issuing a certificate for {spiffe_id}: no answer within {ISSUE_TIMEOUT:g}s"
            ) from None
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"]
            raise CaError(
                f"issuing a certificate for {spiffe_id} failed (exit {done.returncode}): "
                f"{lines[-1]}"
            ) from None
        for level, name, message in answer["logs"]:
            logging.getLogger(name).log(level, "%s", message)
        error = answer.get("error")
        if error is not None:
            raise _ERRORS[error["kind"]](error["message"])
        return _decode(answer["cert"])


def _encode(cert: WorkloadCert) -> dict[str, Any]:
    return {
        "spiffe_id": str(cert.spiffe_id),
        "cert_chain_pem": cert.cert_chain_pem.decode("ascii"),
        "trust_anchors_pem": cert.trust_anchors_pem.decode("ascii"),
        "key_pem": cert.key_pem.decode("ascii"),
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "serial": cert.serial,
    }


def _decode(data: Mapping[str, Any]) -> WorkloadCert:
    return WorkloadCert(
        spiffe_id=SpiffeId.parse(data["spiffe_id"]),
        cert_chain_pem=data["cert_chain_pem"].encode("ascii"),
        trust_anchors_pem=data["trust_anchors_pem"].encode("ascii"),
        key_pem=data["key_pem"].encode("ascii"),
        not_before=datetime.fromisoformat(data["not_before"]),
        not_after=datetime.fromisoformat(data["not_after"]),
        serial=int(data["serial"]),
    )


class _Records(logging.Handler):
    """The log records issuing writes, to hand to the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))


def main() -> int:
    """The child: one request on stdin, one answer on stdout."""
    from proxy.sidecar.identity import local_issuer

    request = json.load(sys.stdin)
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    root.setLevel(request["log_level"])
    answer: dict[str, Any] = {}
    try:
        mtls = Mtls(
            ca_dir=request["ca_dir"],
            trust_domain=request["trust_domain"],
            workload_cert_ttl=Duration(request["workload_cert_ttl"]),
            allowed_clock_skew=Duration(request["allowed_clock_skew"]),
            sentry_address=request["sentry_address"],
        )
        issue = local_issuer(mtls, request["environ"])
        answer["cert"] = _encode(issue(SpiffeId.parse(request["spiffe_id"])))
    except (CaError, WorkloadCertError, OSError, ValueError) as exc:
        kind = next(name for name, cls in _ERRORS.items() if isinstance(exc, cls))
        answer["error"] = {"kind": kind, "message": str(exc)}
    answer["logs"] = records.records
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
