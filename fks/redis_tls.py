"""A TLS-only ``redis-server`` (Redis 7, from ``fks/redis_seven.py``) with certificates the
tests make: a CA, a server certificate for ``127.0.0.1``/``localhost`` signed by it, and an
unrelated CA (a client trusting it must be refused). Made with ``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import redis

from fks.redis_server import EmbeddedRedis

__all__ = ["TlsFiles", "TlsRedis", "write_tls_files"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server: a client trusting it is refused


def write_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def ca(text: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(text)).issuer_name(name(text))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return key, cert

    ca_key, ca_cert = ca("fks test CA")
    _, other = ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server.key",
        directory / "other-ca.pem",
    )  # fmt: skip
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class TlsRedis(EmbeddedRedis):
    """A ``redis-server`` (7, with TLS) that speaks only TLS, with certificates of its own."""

    name = "TLS redis-server"

    def __init__(self, binary: Path, workdir: Path) -> None:
        super().__init__(binary=binary, workdir=workdir, persistent=False)
        self.tls = write_tls_files(workdir / "tls")

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"

    def admin(self) -> redis.Redis:
        """The default user, over TLS with the right CA."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.tls.ca),
            socket_timeout=2,
        )  # fmt: skip

    def _args(self) -> list[str]:
        return [
            str(self.binary), "--port", "0", "--tls-port", str(self.port),
            "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
            "--appendonly", "no", "--loglevel", "warning",
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _probe(self) -> redis.Redis:
        return self.admin()
