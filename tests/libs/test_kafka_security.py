"""Kafka over TLS (and mTLS) with the settings the chart renders, against a real broker.

tansu 0.6.0 cannot serve TLS itself (its `--cert` and `--key` options refuse to be given
together) and its SCRAM login never completes with kafka-python (credentials stored with
AlterUserScramCredentials, broker restarted with `--authentication`: the client times out), so
TLS is terminated by a proxy on loopback in front of the broker, which advertises the proxy's
port: the client side (certificate verification, client certificates, every produce, fetch,
group and admin call over TLS) is real; SASL/SCRAM is covered by the settings checks below and
by the chart's topic Job test (tests/deploy/test_chart.py), not by a broker.
"""

import socket
import ssl
import subprocess
import threading
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from pydantic import ValidationError

from libs.certs import new_ca, new_certificate
from libs.local.broker import free_port, tansu_binary, wait_for_port
from libs.settings import KafkaSettings


class TlsProxy:
    """Accepts TLS on a loopback port (optionally requiring a client certificate) and relays
    plaintext to ``upstream_port``."""

    def __init__(self, port: int, upstream_port: int, cert: str, key: str, client_ca: str | None = None):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        if client_ca:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump(source, target) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(upstream, secure), daemon=True).start()
        pump(secure, upstream)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("kafka-pki")
    ca = new_ca("kafka CA")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    new_certificate(ca, "broker", ["127.0.0.1"]).write(folder / "broker.crt", folder / "broker.key")
    new_certificate(ca, "embedforge", ["embedforge"]).write(folder / "client.crt", folder / "client.key")
    other = new_ca("other CA")
    (folder / "other-ca.crt").write_bytes(other.cert_pem)
    return {path.name: str(path) for path in folder.iterdir()}


def tls_broker(pki, client_ca: str | None):
    """A tansu broker on a private port, reachable only through the TLS proxy it advertises."""
    broker_port, proxy_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(broker_port, timeout_s=10)
    proxy = TlsProxy(proxy_port, broker_port, pki["broker.crt"], pki["broker.key"], client_ca)
    return process, proxy, f"127.0.0.1:{proxy_port}"


@pytest.fixture(scope="module")
def tls_bootstrap(pki):
    process, proxy, bootstrap = tls_broker(pki, client_ca=None)
    yield bootstrap
    proxy.close()
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def mtls_bootstrap(pki):
    process, proxy, bootstrap = tls_broker(pki, client_ca=pki["ca.crt"])
    yield bootstrap
    proxy.close()
    process.terminate()
    process.wait(timeout=10)


def round_trip(settings: KafkaSettings) -> list[bytes]:
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(**settings.client_kwargs(), max_block_ms=15000)
    producer.send(topic, key=b"k", value=b"over tls").get(timeout=15)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        **settings.client_kwargs(),
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        for record in consumer:
            return [record.value]
        return []
    finally:
        consumer.close()


def assert_refused(settings: KafkaSettings) -> None:
    """A producer with these settings cannot reach the broker (it gives up within seconds)."""
    with pytest.raises(KafkaError):
        producer = KafkaProducer(**settings.client_kwargs(), max_block_ms=5000, bootstrap_timeout_ms=3000)
        try:
            producer.send("t", b"x").get(timeout=5)
        finally:
            producer.close(timeout=0)


def test_produce_and_consume_over_tls_verifying_the_broker(pki, tls_bootstrap):
    settings = KafkaSettings(bootstrap_servers=tls_bootstrap, security_protocol="SSL", ssl_cafile=pki["ca.crt"])
    assert round_trip(settings) == [b"over tls"]


def test_a_broker_certificate_from_another_ca_is_refused(pki, tls_bootstrap):
    settings = KafkaSettings(bootstrap_servers=tls_bootstrap, security_protocol="SSL", ssl_cafile=pki["other-ca.crt"])
    assert_refused(settings)


def test_mtls_broker_accepts_the_client_certificate(pki, mtls_bootstrap):
    settings = KafkaSettings(
        bootstrap_servers=mtls_bootstrap,
        security_protocol="SSL",
        ssl_cafile=pki["ca.crt"],
        ssl_certfile=pki["client.crt"],
        ssl_keyfile=pki["client.key"],
    )
    assert round_trip(settings) == [b"over tls"]


def test_mtls_broker_refuses_a_client_without_a_certificate(pki, mtls_bootstrap):
    settings = KafkaSettings(bootstrap_servers=mtls_bootstrap, security_protocol="SSL", ssl_cafile=pki["ca.crt"])
    assert_refused(settings)


def test_scram_sha_512_over_tls_reaches_the_client_with_the_secret_password():
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="forge",
        sasl_password="s3cr3t",
        ssl_cafile="/etc/embedforge/kafka-ca/ca.crt",
    )
    kwargs = settings.client_kwargs()
    assert (
        kwargs["security_protocol"],
        kwargs["sasl_mechanism"],
        kwargs["sasl_plain_username"],
        kwargs["sasl_plain_password"],
    ) == ("SASL_SSL", "SCRAM-SHA-512", "forge", "s3cr3t")
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "p"}, "takes no sasl_mechanism"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}, "needs sasl_username and sasl_password"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-1", "sasl_username": "u", "sasl_password": "p"},
            "sasl_mechanism",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": "client.crt"}, "go together"),
    ],
)
def test_inconsistent_kafka_security_settings_are_refused(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        KafkaSettings(**fields)
