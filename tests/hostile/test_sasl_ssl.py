"""Secured clusters: both clients over SASL_SSL (SCRAM, PLAIN) with TLS and a client certificate.

A broker with a SASL_SSL listener is started for this module by
``scripts/kafka_broker.py`` (``KafkaBroker(secure=True)``): SCRAM users created at format
time, a CA, a broker keystore and a client certificate made with openssl, the client
certificate required. The client settings come the ways users give them: a Java
``client.properties`` file (``sasl.jaas.config``, a PEM truststore and keystore), a
librdkafka-style file, and ``CHOREO_KAFKA_*`` environment variables.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from choreo.cli import main
from choreo.errors import TransportError
from choreo.model.envelope import Envelope
from choreo.transports.factory import open_transport
from choreo.transports.probe import check_cluster
from choreo.transports.properties import env_properties, kafka_config, load_properties

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

CLIENTS = ("confluent", "kafka-python")
BROKER_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka_broker.py"


def _broker_module() -> Any:
    """Return scripts/kafka_broker.py as the module ``kafka_broker`` (shared with conftest)."""
    module = sys.modules.get("kafka_broker")
    if module is None:
        spec = importlib.util.spec_from_file_location("kafka_broker", BROKER_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["kafka_broker"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[Any]:
    """Start a broker with a SASL_SSL listener for this module; stop it after."""
    kafka_broker = _broker_module()
    broker = kafka_broker.KafkaBroker(secure=True, startup_timeout=180.0)
    try:
        broker.start()
    except kafka_broker.BrokerError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no secure broker: {error}")
    try:
        yield broker
    finally:
        broker.stop()


def java_properties(broker: Any, path: Path, *, mechanism: str = "SCRAM-SHA-512",
                    password: str | None = None) -> Path:
    """Write a Java-client style client.properties for user alice; return its path."""
    tls = broker.tls
    secret = broker.users["alice"] if password is None else password
    module = "scram.ScramLoginModule" if mechanism.startswith("SCRAM") else "plain.PlainLoginModule"
    path.write_text(
        "# written like a Java client's client.properties\n"
        f"bootstrap.servers={broker.secure_bootstrap}\n"
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={mechanism}\n"
        f"sasl.jaas.config=org.apache.kafka.common.security.{module} required \\\n"
        f'    username="alice" password="{secret}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={tls.ca}\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={tls.client_pem}\n"
        "key.serializer=org.apache.kafka.common.serialization.ByteArraySerializer\n"
    )
    return path


def round_trip(kind: str, config: Any) -> None:
    """Create a topic, produce one record and consume it back through ``kind``."""
    topic = f"secure-{kind}-{uuid.uuid4().hex[:8]}"
    transport = open_transport(kind, config=config)
    try:
        transport.create_topics([topic])
        producer = transport.producer()
        producer.publish(topic, b"hello over SASL_SSL", key=b"k")
        producer.flush()
        producer.close()
        consumer = transport.consumer(f"g-{topic}", from_beginning=True)
        consumer.subscribe([topic])
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            got = [r.value for r in consumer.poll(timeout=1.0) if r.value is not None]
        consumer.close()
        assert got == [b"hello over SASL_SSL"]
    finally:
        close = getattr(transport, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_both_clients_round_trip_from_a_java_properties_file(
    secure_broker: Any, tmp_path: Path, kind: str, mechanism: str
) -> None:
    """A Java client.properties (JAAS, PEM trust/key stores) drives either client."""
    path = java_properties(secure_broker, tmp_path / "client.properties", mechanism=mechanism)
    config = kafka_config(load_properties(path))
    assert config.sasl_username == "alice"
    check_cluster(kind, config)
    round_trip(kind, config)


@pytest.mark.parametrize("kind", CLIENTS)
def test_environment_variables_in_librdkafka_names(secure_broker: Any, kind: str) -> None:
    """CHOREO_KAFKA_<PROPERTY> variables in librdkafka naming configure either client."""
    tls = secure_broker.tls
    environ = {
        "CHOREO_KAFKA_BOOTSTRAP": secure_broker.secure_bootstrap,
        "CHOREO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHOREO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "CHOREO_KAFKA_SASL_USERNAME": "bob",
        "CHOREO_KAFKA_SASL_PASSWORD": secure_broker.users["bob"],
        "CHOREO_KAFKA_SSL_CA_LOCATION": str(tls.ca),
        "CHOREO_KAFKA_SSL_CERTIFICATE_LOCATION": str(tls.client_cert),
        "CHOREO_KAFKA_SSL_KEY_LOCATION": str(tls.client_key),
        "UNRELATED": "x",
    }
    round_trip(kind, kafka_config(env_properties(environ)))


def publish_saga_start(broker: Any, path: Path) -> str:
    """Publish one saga's start event over SASL_SSL; return its correlation id."""
    config = kafka_config(load_properties(path))
    transport = open_transport("confluent", config=config)
    envelope = Envelope.start("secure.OrderCreated", saga="Secure", service="order")
    transport.create_topics(["secure.OrderCreated"])
    producer = transport.producer()
    producer.publish("secure.OrderCreated", b"payload", key=envelope.correlation_id.encode(),
                     headers=envelope.to_headers())
    producer.flush()
    producer.close()
    return envelope.correlation_id


@pytest.mark.parametrize("kind", CLIENTS)
def test_cli_reads_a_secured_cluster_with_config(
    secure_broker: Any, tmp_path: Path, kind: str
) -> None:
    """`choreo sagas --config client.properties` lists a saga read over SASL_SSL."""
    path = java_properties(secure_broker, tmp_path / "client.properties")
    cid = publish_saga_start(secure_broker, path)
    result = CliRunner().invoke(
        main,
        ["sagas", "--config", str(path), "--transport", kind, "--topics", "^secure\\.",
         "--idle", "2"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert cid in result.output


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_wrong_password_is_a_clear_error_fast(
    secure_broker: Any, tmp_path: Path, kind: str
) -> None:
    """A wrong password ends the command with a clear error: no traceback, no hang, no secret."""
    wrong = "wrong-pa55word-canary"
    path = java_properties(secure_broker, tmp_path / "wrong.properties", password=wrong)
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["sagas", "--config", str(path), "--transport", kind, "--idle", "1"]
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "refused the login of user 'alice'" in result.output
    assert "sasl.password" in result.output  # says what to fix
    assert wrong not in result.output
    assert elapsed < 60
    before = set(threading.enumerate())
    with pytest.raises(TransportError, match="refused the login"):
        check_cluster(kind, kafka_config(load_properties(path)))
    # the refused probe's client is closed, not left logging in again in the background
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not [name for name in left if name.startswith(("kafka-io", "choreo-probe"))], left
