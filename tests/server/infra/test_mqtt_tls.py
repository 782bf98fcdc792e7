"""MQTT over TLS for real: the agent's MqttLink/Uploader and the server's IngestWorker via a TLS Mosquitto."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Flask
from sqlalchemy import func, select

from edge_agent.config import AgentConfig
from edge_agent.keys import generate_private_key, public_key_raw
from edge_agent.mqtt_link import MqttLink
from edge_agent.outbox import Outbox
from edge_agent.uploader import Uploader
from server.domain.evidence.models import Recording
from server.domain.fleet.devices import register_device
from server.infra.config import load_settings
from server.infra.db import session_scope
from server.ingest.service import IngestService
from server.ingest.worker import IngestWorker, parse_broker_url
from tests.conftest import pinned_ingest_keys
from tests.edge_agent.server_stub import wait_until
from tests.fixtures.mqtt import MosquittoBroker, find_mosquitto

pytestmark = pytest.mark.mosquitto

DEVICE = "cam-tls-1"
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the broker's CA, certificate and key, an unrelated CA, and a cert without the IP SAN."""

    ca: Path
    cert: Path
    key: Path
    wrong_ca: Path
    dns_only_cert: Path
    dns_only_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, names: list[x509.GeneralName]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``names`` signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zfjl-test-broker")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + _DAY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA, a broker certificate for 127.0.0.1/localhost, wrong-CA and wrong-name variants."""
    out = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _ca("zfjl test CA")
    key, cert = _server_cert(
        ca_key,
        ca_cert,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    dns_key, dns_cert = _server_cert(ca_key, ca_cert, [x509.DNSName("broker.invalid")])
    _, wrong_cert = _ca("someone else's CA")
    files = TlsFiles(
        ca=out / "ca.pem",
        cert=out / "server.pem",
        key=out / "server.key",
        wrong_ca=out / "wrong-ca.pem",
        dns_only_cert=out / "dns-only.pem",
        dns_only_key=out / "dns-only.key",
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key)
    files.wrong_ca.write_bytes(wrong_cert.public_bytes(serialization.Encoding.PEM))
    files.dns_only_cert.write_bytes(dns_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.dns_only_key, dns_key)
    return files


def _broker(workdir: Path, tls: tuple[Path, Path, Path]) -> Iterator[MosquittoBroker]:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = MosquittoBroker(workdir, binary=binary, tls=tls)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[MosquittoBroker]:
    """A private Mosquitto whose only listener is TLS with the test CA's certificate."""
    yield from _broker(tmp_path / "mosquitto", (tls_files.ca, tls_files.cert, tls_files.key))


@dataclass(frozen=True)
class _Segment:
    """Stands in for the recorder's SegmentFile."""

    path: Path
    size: int
    sha256: str
    started_utc: datetime
    ended_utc: datetime
    started_mono_ns: int
    ended_mono_ns: int


class Device:
    """Outbox + MqttLink + Uploader wired like the agent app does."""

    def __init__(
        self,
        tmp_path: Path,
        key: Ed25519PrivateKey,
        mqtt_url: str,
        ca_file: Path | None,
        ingest_public_keys: tuple[str, ...],
    ) -> None:
        """Build (not started)."""
        self.key = key
        self.config = AgentConfig(
            device_id=DEVICE,
            private_key_file=tmp_path / "k.pem",
            data_dir=tmp_path / "agent",
            mqtt_url=mqtt_url,
            mqtt_ca_file=str(ca_file) if ca_file else "",
            ingest_public_keys=ingest_public_keys,
            chunk_bytes=64 * 1024,
            window=4,
            ack_timeout_s=1.0,
        )
        self.config.segment_dir.mkdir(parents=True)
        self.outbox = Outbox(self.config.outbox_path)
        self.link = MqttLink(self.config, on_ack=self._on_ack, on_connected=self._on_connected)
        self.uploader = Uploader(self.outbox, self.link, self.config, retry_blocked_s=0.5)

    def _on_ack(self, ack: object) -> None:
        self.uploader.on_ack(ack)  # type: ignore[arg-type]

    def _on_connected(self) -> None:
        self.uploader.on_connected()

    def add(self, size: int) -> bytes:
        """Write and journal one segment of random bytes; return them."""
        data = os.urandom(size)
        start = datetime(2026, 3, 1, tzinfo=UTC)
        seg = _Segment(
            path=self.config.segment_dir / "seg-0.mp4",
            size=size,
            sha256=hashlib.sha256(data).hexdigest(),
            started_utc=start,
            ended_utc=start + timedelta(seconds=1),
            started_mono_ns=0,
            ended_mono_ns=1,
        )
        seg.path.write_bytes(data)
        self.outbox.add_segment(seg, device_id=DEVICE, officer_id="", private_key=self.key)
        return data

    def start(self) -> None:
        """Connect and start uploading."""
        self.link.connect()
        self.uploader.start()

    def close(self) -> None:
        """Stop in app order."""
        self.uploader.stop()
        self.link.close(timeout=1.0)
        self.outbox.close()


@pytest.fixture
def devices(tmp_path: Path) -> Iterator[list[Device]]:
    """Devices made by a test, closed afterwards."""
    made: list[Device] = []
    yield made
    for device in made:
        device.close()


@pytest.fixture
def registered_key(app: Flask) -> Ed25519PrivateKey:
    """The device key, registered with the server."""
    key = generate_private_key()
    with session_scope(app) as session:
        register_device(session, DEVICE, public_key_raw(key))
    return key


def _worker(app: Flask, url: str, ca_file: Path | None, name: str = "tls") -> IngestWorker:
    service = IngestService.from_app(app)
    settings = dataclasses.replace(service.settings, mqtt_ca_file=str(ca_file) if ca_file else "")
    return IngestWorker(settings, service, name, url, shared=False)


def _recordings(app: Flask) -> int:
    with session_scope(app) as session:
        return int(session.scalar(select(func.count()).select_from(Recording)) or 0)


def test_ca_file_setting_and_url() -> None:
    """ZFJL_MQTT_CA_FILE is a setting (empty by default) and mqtts:// means TLS on 8883 with credentials."""
    assert load_settings(environ={}).mqtt_ca_file == ""
    assert load_settings(environ={"ZFJL_MQTT_CA_FILE": "/etc/ca.pem"}).mqtt_ca_file == "/etc/ca.pem"
    address = parse_broker_url("mqtts://ingest:p%40ss@broker.example")
    assert (address.tls, address.port, address.username, address.password) == (True, 8883, "ingest", "p@ss")


def test_segment_is_stored_over_tls(
    tmp_path: Path,
    app: Flask,
    registered_key: Ed25519PrivateKey,
    tls_broker: MosquittoBroker,
    tls_files: TlsFiles,
    devices: list[Device],
) -> None:
    """The real agent uploads to the real ingest worker, both over verified TLS; the server stores it."""
    assert tls_broker.url.startswith("mqtts://127.0.0.1:")
    worker = _worker(app, tls_broker.url, tls_files.ca)
    worker.start(timeout_s=10)
    try:
        # The device names the broker by DNS name, the server by IP: both SANs are checked.
        device = Device(
            tmp_path,
            registered_key,
            f"mqtts://localhost:{tls_broker.port}",
            tls_files.ca,
            pinned_ingest_keys(app),
        )
        devices.append(device)
        data = device.add(300_000)
        device.start()
        assert device.link.wait_connected(10), device.link.last_error
        assert wait_until(lambda: (s := device.outbox.get(0)) is not None and s.state == "complete", 30), (
            device.outbox.get(0)
        )
        with session_scope(app) as session:
            (recording,) = session.scalars(select(Recording)).all()
            key = recording.object_key
        assert b"".join(worker.service.store.open_range(key, 0, len(data) - 1)) == data
    finally:
        worker.stop()


def test_wrong_ca_is_refused_and_nothing_is_stored(
    tmp_path: Path,
    app: Flask,
    registered_key: Ed25519PrivateKey,
    tls_broker: MosquittoBroker,
    tls_files: TlsFiles,
    devices: list[Device],
) -> None:
    """A device or ingest worker trusting another CA never connects; the segment stays pending."""
    worker = _worker(app, tls_broker.url, tls_files.ca)
    worker.start(timeout_s=10)
    try:
        device = Device(tmp_path, registered_key, tls_broker.url, tls_files.wrong_ca, pinned_ingest_keys(app))
        devices.append(device)
        device.add(50_000)
        device.start()
        assert not device.link.wait_connected(3)
        segment = device.outbox.get(0)
        assert segment is not None and segment.state == "pending"
        assert _recordings(app) == 0
    finally:
        worker.stop()
    with pytest.raises(ConnectionError):
        _worker(app, tls_broker.url, tls_files.wrong_ca, "wrong-ca").start(timeout_s=3)


def test_system_cas_do_not_trust_a_private_ca(app: Flask, tls_broker: MosquittoBroker) -> None:
    """Without ZFJL_MQTT_CA_FILE the system CAs are used, and they do not vouch for our test CA."""
    with pytest.raises(ConnectionError):
        _worker(app, tls_broker.url, None, "system-ca").start(timeout_s=3)


def test_hostname_is_verified(tmp_path: Path, app: Flask, tls_files: TlsFiles) -> None:
    """A certificate from the right CA but for another name is refused (hostname checking stays on)."""
    tls = (tls_files.ca, tls_files.dns_only_cert, tls_files.dns_only_key)
    for broker in _broker(tmp_path / "mosquitto", tls):
        with pytest.raises(ConnectionError):
            _worker(app, broker.url, tls_files.ca, "wrong-name").start(timeout_s=3)


def test_plain_mqtt_to_the_tls_port_fails(
    tmp_path: Path,
    app: Flask,
    registered_key: Ed25519PrivateKey,
    tls_broker: MosquittoBroker,
    devices: list[Device],
) -> None:
    """mqtt:// (no TLS) to the TLS listener gets no MQTT session, for the worker or a device."""
    plain = f"mqtt://{tls_broker.host}:{tls_broker.port}"
    with pytest.raises(ConnectionError):
        _worker(app, plain, None, "plain").start(timeout_s=3)
    device = Device(tmp_path, registered_key, plain, None, pinned_ingest_keys(app))
    devices.append(device)
    device.add(10_000)
    device.start()
    assert not device.link.wait_connected(3)
    assert _recordings(app) == 0


def test_agent_ca_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    """``mqtt_ca_file = "ca.pem"`` means the file next to agent.toml, like the other paths."""
    config = AgentConfig.from_dict(
        {
            "device_id": DEVICE,
            "private_key_file": "k.pem",
            "data_dir": "data",
            "mqtt_url": "mqtts://broker.example",
            "mqtt_ca_file": "ca.pem",
        },
        base_dir=tmp_path,
    )
    assert config.mqtt_tls
    assert config.mqtt_ca_file == str((tmp_path / "ca.pem").resolve())
