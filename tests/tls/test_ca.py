"""The embedded CA's data directory: creation, reloading, races, load errors, BYO material."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.tls.builders import CA_TTL
from proxy.tls.ca import CertificateAuthority
from proxy.tls.errors import CaError
from proxy.tls.workload_cert import DEFAULT_CLOCK_SKEW
from tests.tls.helpers import FIXED_NOW, TRUST_DOMAIN, FixedClock, new_ca, sid

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_creates_sentry_layout_with_private_modes(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "ca"
    new_ca(directory, FixedClock())
    assert _mode(directory) == 0o700
    assert _mode(directory / "issuer.key") == 0o600
    assert _mode(directory / "root.key") == 0o600
    assert {"ca.crt", "issuer.crt", "issuer.key", "root.key"} <= set(os.listdir(directory))
    assert not [name for name in os.listdir(directory) if name.endswith(".tmp")]


def test_root_is_a_self_signed_one_year_p256_ca(tmp_path: Path) -> None:
    new_ca(tmp_path, FixedClock())
    root = _cert(tmp_path / "ca.crt")
    root.verify_directly_issued_by(root)
    assert root.subject.rfc4514_string() == f"O={TRUST_DOMAIN}"
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert root.not_valid_after_utc == FIXED_NOW + CA_TTL
    assert root.not_valid_before_utc == FIXED_NOW - DEFAULT_CLOCK_SKEW


def test_issuer_is_an_intermediate_with_path_length_zero(tmp_path: Path) -> None:
    new_ca(tmp_path, FixedClock())
    root, issuer = _cert(tmp_path / "ca.crt"), _cert(tmp_path / "issuer.crt")
    issuer.verify_directly_issued_by(root)
    assert issuer.subject != root.subject
    constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    assert issuer.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert issuer.not_valid_after_utc == FIXED_NOW + CA_TTL


def test_second_init_loads_the_same_root(tmp_path: Path) -> None:
    first = new_ca(tmp_path)
    files = {name: (tmp_path / name).read_bytes() for name in ("ca.crt", "issuer.crt")}
    second = new_ca(tmp_path)
    assert second.trust_anchors_pem == first.trust_anchors_pem
    assert second.issuer_cert_pem == first.issuer_cert_pem
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_load_reads_existing_material_and_root_key_is_optional(tmp_path: Path) -> None:
    created = new_ca(tmp_path)
    assert CertificateAuthority.load(tmp_path).has_root_key
    (tmp_path / "root.key").unlink()
    loaded = CertificateAuthority.load(tmp_path)
    assert not loaded.has_root_key
    assert loaded.trust_anchors_pem == created.trust_anchors_pem
    assert loaded.trust_domain == TRUST_DOMAIN


def test_deleting_the_issuer_makes_init_sign_a_new_one_under_the_same_root(tmp_path: Path) -> None:
    first = new_ca(tmp_path)
    (tmp_path / "issuer.crt").unlink()
    (tmp_path / "issuer.key").unlink()
    second = new_ca(tmp_path)
    assert second.trust_anchors_pem == first.trust_anchors_pem
    assert second.issuer_cert_pem != first.issuer_cert_pem


def test_concurrent_inits_in_threads_end_with_one_root(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    start = threading.Barrier(8)
    anchors: list[bytes] = []
    errors: list[BaseException] = []

    def init() -> None:
        start.wait(timeout=10)
        try:
            anchors.append(new_ca(directory).trust_anchors_pem)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(anchors) == 8
    assert set(anchors) == {(directory / "ca.crt").read_bytes()}


def test_concurrent_inits_in_processes_end_with_one_root(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    script = (
        "import hashlib, sys\n"
        "from proxy.tls.ca import CertificateAuthority\n"
        "ca = CertificateAuthority.init(sys.argv[1], 'public')\n"
        "print(hashlib.sha256(ca.trust_anchors_pem).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        for _ in range(6)
    ]
    digests = set()
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err.decode()
        digests.add(out.decode().strip())
    assert digests == {hashlib.sha256((directory / "ca.crt").read_bytes()).hexdigest()}


def test_load_of_a_missing_directory_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CaError, match=r"ca\.crt: missing"):
        CertificateAuthority.load(tmp_path / "nowhere")


def _corrupt(directory: Path, other: Path, damage: str) -> str:
    """Damage the CA in ``directory`` (``other`` is a second CA); returns the file to blame."""
    if damage == "bad pem":
        (directory / "issuer.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
        return "issuer.crt"
    if damage == "key mismatch":
        (directory / "issuer.key").write_bytes((other / "issuer.key").read_bytes())
        return "issuer.key"
    if damage == "foreign issuer":
        (directory / "issuer.crt").write_bytes((other / "issuer.crt").read_bytes())
        (directory / "issuer.key").write_bytes((other / "issuer.key").read_bytes())
        return "issuer.crt"
    if damage == "root key mismatch":
        (directory / "root.key").write_bytes((other / "root.key").read_bytes())
        return "root.key"
    assert damage == "garbage key"
    (directory / "issuer.key").write_bytes(b"not a key")
    return "issuer.key"


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        ("bad pem", "not a valid PEM certificate"),
        ("key mismatch", "does not match"),
        ("foreign issuer", "not signed by the root"),
        ("root key mismatch", "does not match"),
        ("garbage key", "not a valid unencrypted PEM private key"),
    ],
)
def test_load_errors_name_the_file_and_the_problem(
    tmp_path: Path, damage: str, complaint: str
) -> None:
    new_ca(tmp_path / "mine")
    new_ca(tmp_path / "other")
    blamed = _corrupt(tmp_path / "mine", tmp_path / "other", damage)
    for load in (CertificateAuthority.load, lambda path: new_ca(path)):
        with pytest.raises(CaError) as caught:
            load(tmp_path / "mine")
        assert str(tmp_path / "mine" / blamed) in str(caught.value)
        assert complaint in str(caught.value)


def test_expired_material_is_refused(tmp_path: Path) -> None:
    clock = FixedClock()
    new_ca(tmp_path, clock)
    clock.now = FIXED_NOW + CA_TTL + timedelta(seconds=1)
    with pytest.raises(CaError, match=r"ca\.crt: certificate expired at"):
        CertificateAuthority.load(tmp_path, clock=clock)


def test_an_issuer_without_a_root_key_cannot_be_remade(tmp_path: Path) -> None:
    new_ca(tmp_path)
    (tmp_path / "root.key").unlink()
    (tmp_path / "issuer.key").unlink()
    with pytest.raises(CaError, match=r"no root\.key"):
        new_ca(tmp_path)


def test_trust_domain_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        CertificateAuthority.init(tmp_path, "Not A Domain")


# -- bring your own ---------------------------------------------------------------------------


def _byo() -> tuple[bytes, bytes, bytes]:
    root = trustme.CA(organization_name="operator")
    issuer = root.create_child_ca()
    return root.cert_pem.bytes(), issuer.cert_pem.bytes(), issuer.private_key_pem.bytes()


def test_from_pem_accepts_an_operator_root_and_issuer() -> None:
    root_pem, issuer_pem, issuer_key_pem = _byo()
    ca = CertificateAuthority.from_pem(root_pem, issuer_pem, issuer_key_pem)
    issued = ca.issue(sid("orders"))
    leaf, issuer = x509.load_pem_x509_certificates(issued.cert_chain_pem)
    issuer.verify_directly_issued_by(x509.load_pem_x509_certificate(root_pem))
    leaf.verify_directly_issued_by(issuer)
    assert issued.trust_anchors_pem == root_pem


def test_from_pem_errors_name_the_argument() -> None:
    root_pem, issuer_pem, issuer_key_pem = _byo()
    leaf = trustme.CA().issue_cert("orders.example")
    with pytest.raises(CaError, match="issuer certificate PEM: not a CA certificate"):
        CertificateAuthority.from_pem(
            root_pem, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()
        )
    with pytest.raises(CaError, match="root PEM: not a CA certificate"):
        CertificateAuthority.from_pem(leaf.cert_chain_pems[0].bytes(), issuer_pem, issuer_key_pem)
    with pytest.raises(CaError, match="issuer key PEM: private key does not match"):
        CertificateAuthority.from_pem(root_pem, issuer_pem, leaf.private_key_pem.bytes())


def test_from_env_reads_dapr_variables() -> None:
    root_pem, issuer_pem, issuer_key_pem = _byo()
    environ = {
        "DAPR_TRUST_ANCHORS": root_pem.decode(),
        "DAPR_CERT_CHAIN": issuer_pem.decode(),
        # Flattened to one line with literal \n escapes, as some deployment tools do.
        "DAPR_CERT_KEY": issuer_key_pem.decode().replace("\n", "\\n"),
    }
    ca = CertificateAuthority.from_env(environ)
    assert ca is not None
    assert ca.trust_anchors_pem == root_pem
    assert ca.issuer_cert_pem == issuer_pem


def test_from_env_is_none_when_unset_and_names_what_is_missing() -> None:
    assert CertificateAuthority.from_env({"HOME": "/root"}) is None
    root_pem, _, _ = _byo()
    with pytest.raises(CaError, match="DAPR_CERT_CHAIN, DAPR_CERT_KEY: not set"):
        CertificateAuthority.from_env({"DAPR_TRUST_ANCHORS": root_pem.decode()})


def test_from_env_errors_name_the_variable() -> None:
    root_pem, issuer_pem, _ = _byo()
    environ = {
        "DAPR_TRUST_ANCHORS": root_pem.decode(),
        "DAPR_CERT_CHAIN": issuer_pem.decode(),
        "DAPR_CERT_KEY": "garbage",
    }
    with pytest.raises(CaError, match="DAPR_CERT_KEY: not a valid"):
        CertificateAuthority.from_env(environ)


# -- keys meshwire refuses --------------------------------------------------------------------

# A 1024-bit DSA key made with `openssl genpkey` (PKCS#8) and its `openssl dsa` (traditional) form.
DSA_PKCS8_PEM = (
    b"-----BEGIN PRIVATE KEY-----\n"
    b"MIIBWwIBADCCATQGByqGSM44BAEwggEnAoGBAKzVjwSoq2455hIGDyz2YD9QnyrM\n"
    b"/br8dLG92F5Td8kfpNjhyind4s/QKZWE4R/3eOZ3pOEl1ikmRf7C5pEYXb83DDH7\n"
    b"/697LY/pFJy6casteeTwECOQK4ox5YvM4GBgazKqRH4Mws/hD4BtIlZks/6CwMX0\n"
    b"aZBF6cqw4m2BvP5NAh0Al5IxuBmgkfAqwJJdZMFel8cBeEp67abGo+k/TwKBgQCC\n"
    b"SVpthIIJs84Tj8HqDGZUeK8Cg2+K+mrYQVrig75BI8gtlzlgdY0y6/PS0lBu7Ynv\n"
    b"OEApgS2V+wAwHSpYvFEO5qPsFdWS+h7WdkvZxMjb8N7jrq0eKbEbjl+xVFf8/4n0\n"
    b"4GAo90wIuafiBTSmpXqzXvBiMVI7lA2JdJeqqPEB7wQeAhxSoDApISSNoRe6XCIa\n"
    b"pv+F9lqig5ZB1yhIachz\n"
    b"-----END PRIVATE KEY-----\n"
)
DSA_TRADITIONAL_PEM = (
    b"-----BEGIN DSA PRIVATE KEY-----\n"
    b"MIIBzAIBAAKBgQCs1Y8EqKtuOeYSBg8s9mA/UJ8qzP26/HSxvdheU3fJH6TY4cop\n"
    b"3eLP0CmVhOEf93jmd6ThJdYpJkX+wuaRGF2/Nwwx+/+vey2P6RScunGrLXnk8BAj\n"
    b"kCuKMeWLzOBgYGsyqkR+DMLP4Q+AbSJWZLP+gsDF9GmQRenKsOJtgbz+TQIdAJeS\n"
    b"MbgZoJHwKsCSXWTBXpfHAXhKeu2mxqPpP08CgYEAgklabYSCCbPOE4/B6gxmVHiv\n"
    b"AoNvivpq2EFa4oO+QSPILZc5YHWNMuvz0tJQbu2J7zhAKYEtlfsAMB0qWLxRDuaj\n"
    b"7BXVkvoe1nZL2cTI2/De466tHimxG45fsVRX/P+J9OBgKPdMCLmn4gU0pqV6s17w\n"
    b"YjFSO5QNiXSXqqjxAe8CgYEAj5Gq60DvejYtY3Y1S/1WtBMRmP3Aw8xVOz1OWDfP\n"
    b"KtfuWZvnyr74NmqHQrsYNgViEjsccpC+F8dF85GRpyd6lPdT0RJ2cKtpiYFpYt3L\n"
    b"Zv6VuxklBx2UCzdW3w/Cdp8eX2nyP6pv8YO1w7nMKsh4DvFGOrtXNeEXukLVE1ba\n"
    b"umkCHFKgMCkhJI2hF7pcIhqm/4X2WqKDlkHXKEhpyHM=\n"
    b"-----END DSA PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    "key_pem", [DSA_PKCS8_PEM, DSA_TRADITIONAL_PEM], ids=["pkcs8", "traditional"]
)
def test_a_dsa_issuer_key_is_refused_by_name_without_a_warning(key_pem: bytes) -> None:
    root_pem, issuer_pem, _ = _byo()
    # filterwarnings=error: had cryptography been asked to parse the key, its DSA deprecation
    # warning would fail this test before the message is checked.
    with pytest.raises(CaError, match="issuer key PEM: a DSA key: meshwire never makes or accepts"):
        CertificateAuthority.from_pem(root_pem, issuer_pem, key_pem)


def test_a_key_that_cannot_sign_is_refused_by_type() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    root_pem, issuer_pem, _ = _byo()
    key_pem = x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CaError, match="X25519PrivateKey cannot sign certificates"):
        CertificateAuthority.from_pem(root_pem, issuer_pem, key_pem)
