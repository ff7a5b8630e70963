"""Secrets never appear in reprs, errors or logs, even with both Kafka clients at DEBUG.

Canary secrets are given to each client as its password, OAuth configuration and
private key; the clients then run at DEBUG log level against an address where no broker
listens. The canaries must appear nowhere: captured log records (formatted, with their
tracebacks), stdout and stderr (librdkafka writes there natively), the reprs of the
configuration and transport, and the errors raised.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest

from choreo.errors import ChoreoError
from choreo.safety.redact import (
    MASK,
    install_log_redaction,
    is_secret,
    redact_settings,
    redact_text,
    register_secret,
)
from choreo.transports.config import KafkaConfig
from choreo.transports.factory import open_transport

CANARY = "canary-7f3a9c"  # every secret below contains it


def unreachable(**settings: Any) -> KafkaConfig:
    """Return a config for a port where nothing listens, failing fast, debugging fully."""
    return KafkaConfig(bootstrap_servers="127.0.0.1:1", **settings)


CONFLUENT_FAST = {
    "debug": "all",
    "socket.connection.setup.timeout.ms": 1000,
    "message.timeout.ms": 1500,
    "reconnect.backoff.max.ms": 200,
}
KAFKA_PYTHON_FAST = {
    "request.timeout.ms": 1500,
    "api.version.auto.timeout.ms": 1500,
    "reconnect.backoff.max.ms": 200,
}


def exercise(transport: Any) -> tuple[list[str], bool]:
    """Produce and consume against the dead address; return what was raised or shown, and
    whether a client could be created at all."""
    seen: list[str] = [repr(transport.config), str(transport.config), repr(transport)]
    created = False
    try:
        producer = transport.producer()
        created = True
        seen.append(repr(producer))
        producer.publish("t", b"v", key=b"k")
        producer.flush()
        producer.close()
    except Exception as exc:  # the failure is the point; its text must be clean
        seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
    try:
        consumer = transport.consumer("g", from_beginning=True)
        consumer.subscribe(["t"])
        consumer.poll(1.0)
        consumer.close()
    except Exception as exc:
        seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
    return seen, created


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        pytest.param(
            "confluent",
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "alice",
                "sasl_password": f"pw-{CANARY}",
                "common": CONFLUENT_FAST,
            },
            id="confluent-sasl-plain",
        ),
        pytest.param(
            "confluent",
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "common": {
                    **CONFLUENT_FAST,
                    "sasl.oauthbearer.config": f"principal=alice scope=x{CANARY}",
                    "enable.sasl.oauthbearer.unsecure.jwt": True,
                },
            },
            id="confluent-oauthbearer",
        ),
        pytest.param(
            "confluent",
            {
                "security_protocol": "SSL",
                "common": {
                    **CONFLUENT_FAST,
                    "ssl.key.pem": f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n"
                    "-----END PRIVATE KEY-----",
                    "ssl.key.password": f"kp-{CANARY}",
                },
            },
            id="confluent-ssl-key-pem",
        ),
        pytest.param(
            "kafka-python",
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "alice",
                "sasl_password": f"pw-{CANARY}",
                "common": KAFKA_PYTHON_FAST,
            },
            id="kafka-python-scram",
        ),
        pytest.param(
            "kafka-python",
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "alice",
                "sasl_password": f"pw-{CANARY}",
                "common": KAFKA_PYTHON_FAST,
            },
            id="kafka-python-plain",
        ),
    ],
)
def test_no_canary_anywhere_with_debug_logging(
    kind: str, settings: dict[str, Any], caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Both clients at DEBUG against a failing connection leak no secret anywhere."""
    caplog.set_level(logging.DEBUG)
    config = unreachable(**settings)
    ran = False
    try:
        transport = open_transport(kind, config=config)
        seen, ran = exercise(transport)
        close = getattr(transport, "close", None)
        if close is not None:
            close()
        if kind == "kafka-python":
            try:
                transport.list_topics()
            except ChoreoError as exc:
                seen.append(str(exc))
    except ChoreoError as exc:  # a client refusing the settings: the error must be clean
        seen = [str(exc), "".join(traceback.format_exception(exc))]
    out, err = capfd.readouterr()
    logged = caplog.text + "".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    if ran:
        assert caplog.records, "the clients logged nothing at DEBUG: the test proves nothing"
    for name, text in [("logs", logged), ("stdout", out), ("stderr", err),
                       *(("raised/repr", s) for s in seen)]:
        at = text.find(CANARY)
        assert at < 0, f"{kind}: secret in {name}: ...{text[max(0, at - 200) : at + 200]}"


def test_kafka_python_admin_configuration_dump_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka-python logs its whole admin configuration at DEBUG: the password is masked."""
    caplog.set_level(logging.DEBUG)
    install_log_redaction()
    logging.getLogger("kafka.admin.client").debug(
        "Starting KafkaAdminClient with configuration: %s",
        {"sasl_plain_password": "no-one-registered-this", "sasl_plain_username": "alice"},
    )
    assert "no-one-registered-this" not in caplog.text
    assert "'sasl_plain_password': '***'" in caplog.text
    assert "alice" in caplog.text


@pytest.mark.parametrize(
    "name",
    [
        "sasl.password", "sasl_plain_password", "ssl.key.password", "ssl_password",
        "ssl.key.pem", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
        "ssl.keystore.password", "sasl.jaas.config", "basic.auth.user.info",
        "bearer.auth.token", "bearer.auth.client.secret", "schema.registry.basic.auth.user.info",
    ],
)
def test_every_secret_property_is_known(name: str) -> None:
    """Each client's secret properties are recognised by name and masked in reprs."""
    assert is_secret(name)
    assert redact_settings({name: "value"}) == {name: MASK}


@pytest.mark.parametrize(
    "name", ["bootstrap.servers", "sasl.username", "ssl.key.location", "ssl.ca.location",
             "security.protocol", "sasl.mechanism", "group.id"],
)
def test_ordinary_properties_are_shown(name: str) -> None:
    """Names, paths and protocols are not secrets."""
    assert not is_secret(name)


def test_urls_with_credentials_and_registered_values_are_masked() -> None:
    """A registry URL's password and any registered secret are masked in free text."""
    register_secret("s3cret-value-x")
    text = redact_text("GET https://bob:pa55@registry:8081/subjects failed; key s3cret-value-x")
    assert text == "GET https://bob:***@registry:8081/subjects failed; key ***"
    assert redact_settings({"schema.registry.url": "http://u:p4ss@h"}) == {
        "schema.registry.url": "http://u:***@h"
    }


def test_choreo_errors_mask_registered_secrets() -> None:
    """A choreo error whose message carries a secret (e.g. echoed by a client) masks it."""
    KafkaConfig(bootstrap_servers="h:1", sasl_password="echoed-secret-42")
    error = ChoreoError("client said: bad password echoed-secret-42")
    assert "echoed-secret-42" not in str(error)
    assert "echoed-secret-42" not in "".join(traceback.format_exception(error))
