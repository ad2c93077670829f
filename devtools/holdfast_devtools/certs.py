"""A throwaway certificate authority for TLS tests and the demo (never for production).

One CA signs a server certificate (valid for 127.0.0.1, ::1 and localhost, usable for etcd's
client and peer listeners) and client certificates (for mutual TLS). Keys are EC P-256, written
with mode 0600 into a directory the caller owns (an etcd node's temp dir).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR: Final = dt.timedelta(days=2)
SERVER_NAMES: Final = ("localhost",)
SERVER_IPS: Final = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class LocalPki:
    ca: Path
    server: CertPair
    client: CertPair  # a client certificate whose CN matches no etcd user


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)
_Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


class _Ca:
    def __init__(self, common: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(_name(common))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common: str, *, server: bool, client: bool) -> _Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server:
            alt: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
            alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def make_test_pki(directory: Path, *, client_name: str = "holdfast-test-client") -> LocalPki:
    """Write ca.pem, server.pem/server-key.pem and client.pem/client-key.pem into ``directory``.

    The server certificate also serves as etcd's peer certificate (it carries both usages).
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = _Ca("holdfast throwaway test CA")
    ca_path = directory / "ca.pem"
    _write_cert(ca.cert, ca_path)
    pairs: list[CertPair] = []
    for stem, common, server in (("server", "localhost", True), ("client", client_name, False)):
        cert, key = ca.issue(common, server=server, client=True)
        pair = CertPair(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
        _write_cert(cert, pair.cert)
        _write_key(key, pair.key)
        pairs.append(pair)
    return LocalPki(ca=ca_path, server=pairs[0], client=pairs[1])
