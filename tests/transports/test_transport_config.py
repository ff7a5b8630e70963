"""KafkaConfig: safe defaults, overrides, kafka-python names, and secrets kept out of repr."""

from __future__ import annotations

import logging

import pytest

from choreo.errors import ConfigurationError
from choreo.transports.config import KafkaConfig, to_kafka_python
from choreo.transports.confluent import ConfluentTransport
from choreo.transports.kafka_python import KafkaPythonTransport

SECRET = "hunter2-do-not-print"


def secret_config() -> KafkaConfig:
    """Return a config carrying secrets in fields and in overrides."""
    return KafkaConfig(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SECRET,
        ssl_key_password=SECRET,
        common={"sasl.oauthbearer.client.secret": SECRET},
        producer={"sasl.password": SECRET, "linger.ms": 20},
        consumer={"ssl.key.password": SECRET},
    )


def test_secrets_never_appear_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    """repr, str and a logged config mask every secret but keep the other settings."""
    config = secret_config()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config: %s %r", config, config)
    for text in (repr(config), str(config), caplog.text):
        assert SECRET not in text
        assert "SCRAM-SHA-512" in text and "svc" in text and "'linger.ms': 20" in text
        assert "***" in text


def test_producer_settings_have_safe_defaults_and_overrides_win() -> None:
    """Producer settings start from the safe defaults; overrides replace them."""
    settings = secret_config().producer_settings("tx-1")
    assert settings["enable.idempotence"] is True
    assert settings["acks"] == "all"
    assert settings["max.in.flight.requests.per.connection"] == 5
    assert settings["linger.ms"] == 20
    assert settings["transactional.id"] == "tx-1"
    assert settings["sasl.password"] == SECRET
    assert settings["security.protocol"] == "SASL_SSL"


def test_consumer_settings_never_auto_commit_and_follow_from_beginning() -> None:
    """Consumer settings disable auto-commit, read committed and map from_beginning."""
    config = KafkaConfig(bootstrap_servers="b:9092", consumer={"group.id": "ignored"})
    earliest = config.consumer_settings("g1")
    latest = config.consumer_settings("g1", from_beginning=False)
    assert earliest["enable.auto.commit"] is False
    assert earliest["isolation.level"] == "read_committed"
    assert earliest["auto.offset.reset"] == "earliest"
    assert latest["auto.offset.reset"] == "latest"
    assert earliest["group.id"] == "g1"


def test_kafka_python_names_are_translated() -> None:
    """librdkafka names become kafka-python keywords, string values become typed ones."""
    translated = to_kafka_python(secret_config().producer_settings())
    assert translated["sasl_plain_username"] == "svc"
    assert translated["sasl_plain_password"] == SECRET
    assert translated["ssl_password"] == SECRET
    assert translated["security_protocol"] == "SASL_SSL"
    assert translated["enable_idempotence"] is True
    assert translated["max_in_flight_requests_per_connection"] == 5
    assert to_kafka_python({"ssl.ca.location": "/ca.pem", "message.max.bytes": "2048"}) == {
        "ssl_cafile": "/ca.pem",
        "max_request_size": 2048,
    }
    assert to_kafka_python({"enable.auto.commit": "false"}) == {"enable_auto_commit": False}


def test_empty_bootstrap_is_a_configuration_error() -> None:
    """A config without bootstrap servers is rejected when built."""
    with pytest.raises(ConfigurationError):
        KafkaConfig(bootstrap_servers=" ")


def test_unknown_kafka_python_setting_is_a_configuration_error() -> None:
    """kafka-python refuses a setting it does not know, before connecting anywhere."""
    config = KafkaConfig(bootstrap_servers="127.0.0.1:1", producer={"no.such.setting": 1})
    with pytest.raises(ConfigurationError, match="no_such_setting"):
        KafkaPythonTransport(config).producer()


def test_unknown_confluent_setting_is_a_configuration_error() -> None:
    """librdkafka refuses a setting it does not know, before connecting anywhere."""
    config = KafkaConfig(bootstrap_servers="127.0.0.1:1", consumer={"no.such.setting": 1})
    with pytest.raises(ConfigurationError, match=r"no\.such\.setting"):
        ConfluentTransport(config).consumer("g")


def test_instance_id_becomes_group_instance_id_for_both_clients() -> None:
    """An instance id is set as ``group.instance.id`` and renamed for kafka-python."""
    config = KafkaConfig(bootstrap_servers="b:9092", consumer={"group.instance.id": "ignored"})
    settings = config.consumer_settings("g1", instance_id="order-0")
    assert settings["group.instance.id"] == "order-0"
    assert to_kafka_python(settings)["group_instance_id"] == "order-0"
    assert "group.instance.id" not in KafkaConfig("b:9092").consumer_settings("g1")


def test_empty_instance_id_is_a_configuration_error() -> None:
    """A blank instance id is refused by both Kafka transports before connecting."""
    config = KafkaConfig(bootstrap_servers="127.0.0.1:1")
    for transport in (ConfluentTransport(config), KafkaPythonTransport(config)):
        with pytest.raises(ConfigurationError, match="instance id"):
            transport.consumer("g", instance_id=" ")


def test_a_transactional_producer_gets_a_30_s_transaction_timeout_unless_overridden() -> None:
    """Only a transactional producer gets choreo's transaction timeout; an override wins."""
    config = KafkaConfig(bootstrap_servers="b:9092")
    assert config.producer_settings("tx-1")["transaction.timeout.ms"] == 30_000
    assert "transaction.timeout.ms" not in config.producer_settings()
    tuned = KafkaConfig(bootstrap_servers="b:9092", producer={"transaction.timeout.ms": 45_000})
    assert tuned.producer_settings("tx-1")["transaction.timeout.ms"] == 45_000
    assert to_kafka_python(config.producer_settings("tx-1"))["transaction_timeout_ms"] == 30_000
