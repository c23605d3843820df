"""ChildIssuer: a sidecar's certificates issued by `python -m proxy.sidecar.issuer_process`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.sidecar import Mtls
from proxy.sidecar.issuer_process import ChildIssuer
from proxy.tls.contexts import load_chain, new_server_context
from proxy.tls.errors import CaError
from tests.tls.helpers import chain_certificates, sid


def test_the_child_creates_the_ca_and_issues_a_usable_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir = tmp_path / "ca"
    with caplog.at_level(logging.INFO):
        cert = ChildIssuer(Mtls(ca_dir=str(ca_dir)), {})(sid("orders"))
    assert cert.spiffe_id == sid("orders")
    assert (ca_dir / "ca.crt").read_bytes() == cert.trust_anchors_pem
    leaf = chain_certificates(cert.cert_chain_pem)[0]
    assert leaf.serial_number == cert.serial
    assert leaf.not_valid_after_utc == cert.not_after
    assert leaf.not_valid_before_utc == cert.not_before
    load_chain([new_server_context(cert.trust_anchors_pem)], cert)  # the key is the leaf's
    relayed = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("proxy.tls.ca_files", logging.INFO, f"created CA issuer in {ca_dir}") in relayed


def test_the_childs_refusal_comes_back_as_the_error_start_up_reports(tmp_path: Path) -> None:
    issue = ChildIssuer(Mtls(ca_dir=str(tmp_path / "ca")), {"DAPR_CERT_CHAIN": "x"})
    with pytest.raises(CaError, match="DAPR_TRUST_ANCHORS, DAPR_CERT_KEY: not set"):
        issue(sid("orders"))
    assert not (tmp_path / "ca").exists()


def test_a_second_certificate_comes_from_the_same_ca(tmp_path: Path) -> None:
    issue = ChildIssuer(Mtls(ca_dir=str(tmp_path / "ca")), {})
    first, second = issue(sid("orders")), issue(sid("orders"))
    assert first.trust_anchors_pem == second.trust_anchors_pem
    assert first.serial != second.serial
