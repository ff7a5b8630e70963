"""Client properties files and environment variables, mapped to both Kafka clients."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from choreo.errors import ConfigurationError
from choreo.transports.config import to_kafka_python
from choreo.transports.oauth import OidcTokenProvider, UnsecuredTokenProvider
from choreo.transports.properties import (
    env_properties,
    kafka_config,
    load_properties,
    parse_properties,
    registry_properties,
)


def test_java_properties_syntax() -> None:
    """Comments, separators, continuations and escapes are read as Java reads them."""
    text = (
        "# comment\n! another\n"
        "a=1\n"
        "b : two words\n"
        "c three\n"
        "long = first \\\n    second\n"
        "esc\\=aped=tab\\there\\u00e9\n"
        "empty=\n"
    )
    assert parse_properties(text) == {
        "a": "1", "b": "two words", "c": "three", "long": "first second",
        "esc=aped": "tab\there\u00e9", "empty": "",
    }


def test_jaas_scram_and_pem_stores_become_librdkafka_settings() -> None:
    """sasl.jaas.config, PEM truststore and keystore map to sasl.* and ssl.*.location."""
    config = kafka_config(parse_properties(
        "bootstrap.servers=k1:9093,k2:9093\n"
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required'
        ' username="alice" password="p\\\\"w";\n'
        "ssl.truststore.type=PEM\nssl.truststore.location=/ca.pem\n"
        "ssl.keystore.type=PEM\nssl.keystore.location=/client.pem\n"
        "ssl.endpoint.identification.algorithm=\n"
        "producer.linger.ms=20\nconsumer.fetch.min.bytes=1\n"
        "schema.registry.url=https://u:p@reg\n"
        "key.serializer=org.apache.kafka.common.serialization.StringSerializer\n"
    ))
    assert config.bootstrap_servers == "k1:9093,k2:9093"
    assert (config.sasl_username, config.sasl_password) == ("alice", 'p"w')
    assert config.ssl_ca_location == "/ca.pem"
    assert config.ssl_certificate_location == config.ssl_key_location == "/client.pem"
    assert config.common == {"ssl.endpoint.identification.algorithm": "none"}
    assert config.producer == {"linger.ms": "20"} and config.consumer == {"fetch.min.bytes": "1"}
    assert "p\"w" not in repr(config)
    python = to_kafka_python(config.common_settings())
    assert python["sasl_plain_password"] == 'p"w' and python["ssl_cafile"] == "/ca.pem"
    assert python["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("security.protocol=SASL_SSL\n", "needs sasl.mechanism"),
        ("security.protocol=TLS\n", "is not one of"),
        ("ssl.truststore.location=/t.jks\n", "JKS store"),
        ("sasl.jaas.config=com.example.Custom required;\n", "cannot map"),
        ("", "no Kafka address"),
    ],
)
def test_errors_say_what_to_fix(text: str, message: str) -> None:
    """A missing address, unknown protocol, JKS store or custom login module is explained."""
    properties = parse_properties(text)
    bootstrap = None if message == "no Kafka address" else "h:1"
    with pytest.raises(ConfigurationError, match=message):
        kafka_config(properties, bootstrap=bootstrap)


def test_environment_variables() -> None:
    """CHOREO_KAFKA_<PROPERTY> maps to property names; CONFIG is not a property."""
    assert env_properties({
        "CHOREO_KAFKA_SASL_PASSWORD": "x", "CHOREO_KAFKA_BOOTSTRAP": "h:1",
        "CHOREO_KAFKA_CONFIG": "/f", "OTHER": "y",
    }) == {"sasl.password": "x", "bootstrap.servers": "h:1"}


def test_registry_properties_are_kept_apart() -> None:
    """Schema registry settings are separated from the Kafka client's."""
    props = {"schema.registry.url": "http://r", "basic.auth.user.info": "u:p", "acks": "all"}
    assert registry_properties(props) == {"url": "http://r", "basic.auth.user.info": "u:p"}
    assert kafka_config(props, bootstrap="h:1").common == {"acks": "all"}


def test_oauthbearer_maps_to_a_kafka_python_token_provider() -> None:
    """An unsecured principal or OIDC client credentials become kafka-python providers."""
    unsecured = kafka_config(parse_properties(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
        "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
        ' required unsecuredLoginStringClaim_sub="alice";\n'
    ), bootstrap="h:1")
    provider = to_kafka_python(unsecured.common_settings())["sasl_oauth_token_provider"]
    assert isinstance(provider, UnsecuredTokenProvider)
    claims = provider.token().split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sub"] == "alice"
    oidc = kafka_config(parse_properties(
        "security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n"
        "sasl.oauthbearer.token.endpoint.url=https://idp/token\n"
        "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
        ' required clientId="app" clientSecret="oidc-secret-1";\n'
    ), bootstrap="h:1")
    provider = to_kafka_python(oidc.common_settings())["sasl_oauth_token_provider"]
    assert isinstance(provider, OidcTokenProvider)
    assert "oidc-secret-1" not in repr(provider) and "oidc-secret-1" not in repr(oidc)


def test_kafka_python_refuses_what_it_cannot_use() -> None:
    """A PKCS12 keystore or inline PEM is an error naming the fix for kafka-python."""
    with pytest.raises(ConfigurationError, match="openssl pkcs12"):
        to_kafka_python({"ssl.keystore.location": "/ks.p12"})


def test_load_properties_errors(tmp_path: Path) -> None:
    """A missing file is a ConfigurationError naming the path and the option."""
    with pytest.raises(ConfigurationError, match="--config"):
        load_properties(tmp_path / "missing.properties")


def test_registry_settings_from_url_properties_and_environment() -> None:
    """The registry URL's credentials become basic auth; properties and options combine."""
    from choreo.safety.redact import redact_text
    from choreo.transports.properties import registry_client_config

    settings = registry_client_config({}, url="https://svc:reg%3Apw-9@registry.example:8081/x")
    assert settings == {
        "url": "https://registry.example:8081/x",
        "basic.auth.user.info": "svc:reg:pw-9",
    }
    assert "reg:pw-9" not in redact_text("GET failed: svc:reg:pw-9")
    props = {"schema.registry.url": "http://r:8081", "basic.auth.user.info": "a:bcdef",
             "schema.registry.ssl.ca.location": "/ca.pem", "bootstrap.servers": "h:1"}
    assert registry_client_config(props) == {
        "url": "http://r:8081", "basic.auth.user.info": "a:bcdef", "ssl.ca.location": "/ca.pem",
    }
    assert registry_client_config(props, user_info="u:override")["basic.auth.user.info"] == (
        "u:override"
    )
    assert registry_client_config({"acks": "all"}) is None
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        registry_client_config({}, url="ftp://u:secret-pw@r")
