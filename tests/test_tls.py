"""tq+rediss://: TLS to Redis, configured through Celery's broker_use_ssl."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import tq_kombu  # noqa: F401

from .conftest import REDIS_SERVER, RedisServer, free_port
from .workers import wait_for


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if REDIS_SERVER is None:
        RedisServer(tmp_path).start()  # fails in CI, skips locally, with the reason
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port, cert
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_task_message_travels_over_tls(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    app = Celery("tls", broker=f"tq+rediss://127.0.0.1:{port}/0")
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(cert)}

    def reachable() -> bool:
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:  # noqa: BLE001 - the server is still starting
            return False

    wait_for(reachable, 10, "the TLS redis-server")
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("secure")
        queue.put({"over": "tls"})
        message = queue.get(timeout=5)
        assert message.payload == {"over": "tls"}
        message.ack()
        queue.close()


def test_a_wrong_certificate_authority_is_refused(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_redis
    wait_for(lambda: port_open(port), 10, "the TLS redis-server")
    (tmp_path / "other").mkdir()
    other_ca, _ = self_signed(tmp_path / "other")
    app = Celery("tls", broker=f"tq+rediss://127.0.0.1:{port}/0")
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(other_ca)}
    with pytest.raises(Exception, match="(?i)certificate verify failed"):
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)


def test_the_settings_only_form_and_the_admin_api_go_over_tls_too(
    tls_redis: tuple[int, Path],
) -> None:
    from tq_kombu.admin import Admin

    port, cert = tls_redis
    wait_for(lambda: port_open(port), 10, "the TLS redis-server")
    # Given a plain rediss:// URL with broker_transport, and Celery's broker_use_ssl
    app = Celery("tls_plain", broker=f"rediss://127.0.0.1:{port}/0")
    app.conf.broker_transport = "tq_kombu.transport:Transport"
    app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(cert)}
    # When a message is published
    with app.connection_for_write() as conn:
        conn.SimpleQueue("secure").put({"over": "tls"})
    # Then the admin API of that app finds it (over TLS as well)
    with Admin.from_app(app) as admin:
        assert admin.store.counts("secure").ready == 1
    app.close()
