"""Kafka client settings for the confluent and kafka-python transports.

:class:`KafkaConfig` holds the cluster address, security settings and free-form
overrides, all in librdkafka naming (the names Kafka's own documentation uses). The
confluent transport passes them through; :func:`to_kafka_python` renames them for
kafka-python. Secrets never appear in ``repr``/``str``.

Safe defaults, set explicitly here and applied before any override:

Producer (:data:`PRODUCER_DEFAULTS`)
    ``enable.idempotence=true``, ``acks=all``, ``linger.ms=5``,
    ``max.in.flight.requests.per.connection=5``: no duplicates or reordering on
    retry, every in-sync replica acknowledges, small batches without per-record
    latency.
Transactional producer (:data:`TRANSACTIONAL_DEFAULTS`, with a transactional id)
    ``transaction.timeout.ms=30000`` instead of the clients' 60 s: a transaction whose
    producer died (and that no replacement with the same transactional id fences) is
    aborted by the broker within this timeout plus its abort check interval
    (``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s), so
    ``read_committed`` readers of the partitions it wrote to wait at most about 40 s.
    A transaction of choreo's lasts one batch's publish and commit; one still open
    after 30 s (a broker outage longer than that) is aborted by the broker, while the
    worker's own transactional calls give up after the same 30 s and recreate the
    producer (a producer the broker fenced first fails fatally: its worker exits for
    its supervisor to restart it). librdkafka lowers ``message.timeout.ms`` to match.
Consumer (:data:`CONSUMER_DEFAULTS`)
    ``enable.auto.commit=false`` (the runtime commits what it has handled),
    ``isolation.level=read_committed`` (aborted transactions stay invisible), and
    ``auto.offset.reset`` ``earliest`` or ``latest`` from ``from_beginning``.

Overrides in ``common``, ``producer`` and ``consumer`` win over these defaults; the
group id, group instance id and transactional id are always the ones the transport is
asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final

from choreo.errors import ConfigurationError
from choreo.safety.redact import install_log_redaction, redact_settings, register_settings

__all__ = [
    "CONSUMER_DEFAULTS",
    "PRODUCER_DEFAULTS",
    "TRANSACTIONAL_DEFAULTS",
    "KafkaConfig",
    "to_kafka_python",
]

Settings = dict[str, object]

PRODUCER_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "max.in.flight.requests.per.connection": 5,
    }
)
"""Producer settings choreo applies before any override (librdkafka names)."""

TRANSACTIONAL_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {"transaction.timeout.ms": 30_000}
)
"""Settings of a transactional producer choreo applies before any override."""

CONSUMER_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
)
"""Consumer settings choreo applies before any override (librdkafka names)."""


# librdkafka name -> kafka-python keyword, where the rule "dots become underscores"
# does not hold.
_KAFKA_PYTHON_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "sasl.username": "sasl_plain_username",
        "sasl.password": "sasl_plain_password",
        "sasl.mechanisms": "sasl_mechanism",
        "ssl.ca.location": "ssl_cafile",
        "ssl.certificate.location": "ssl_certfile",
        "ssl.key.location": "ssl_keyfile",
        "ssl.key.password": "ssl_password",
        "ssl.endpoint.identification.algorithm": "ssl_check_hostname",
        "message.max.bytes": "max_request_size",
        "topic.metadata.refresh.interval.ms": "metadata_max_age_ms",
        "fetch.wait.max.ms": "fetch_max_wait_ms",
        "compression.codec": "compression_type",
        "queue.buffering.max.ms": "linger_ms",
        "max.in.flight": "max_in_flight_requests_per_connection",
        "max.poll.records": "max_poll_records",
    }
)


@dataclass(frozen=True, slots=True, repr=False)
class KafkaConfig:
    """Everything needed to connect to one Kafka cluster, in librdkafka naming.

    ``common`` applies to producers, consumers and admin clients; ``producer`` and
    ``consumer`` to those clients only. Values given as ``None`` are left out.
    """

    bootstrap_servers: str
    client_id: str = "choreo"
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = None
    common: Mapping[str, object] = field(default_factory=dict)
    producer: Mapping[str, object] = field(default_factory=dict)
    consumer: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Reject an empty bootstrap address; register every secret for redaction.

        The secrets (see :func:`choreo.safety.redact.is_secret`) are registered with the
        redaction layer, whose log filter is installed on choreo's and both Kafka
        clients' loggers, so they cannot appear in a log line or a choreo error.
        """
        if not self.bootstrap_servers or not self.bootstrap_servers.strip():
            raise ConfigurationError(
                "KafkaConfig needs bootstrap_servers: give --bootstrap HOST:PORT[,...], "
                "$CHOREO_KAFKA_BOOTSTRAP or bootstrap.servers in the client properties"
            )
        install_log_redaction()
        register_settings({f.name: getattr(self, f.name) for f in fields(self)})
        for group in (self.common, self.producer, self.consumer):
            register_settings(group)

    def common_settings(self) -> Settings:
        """Return the connection and security settings shared by every client."""
        settings: Settings = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
        }
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        settings.update({k: v for k, v in optional.items() if v is not None})
        settings.update(self.common)
        return settings

    def producer_settings(self, transactional_id: str | None = None) -> Settings:
        """Return producer settings: safe defaults, then overrides, then the transactional id."""
        settings: Settings = dict(PRODUCER_DEFAULTS)
        if transactional_id is not None:
            settings.update(TRANSACTIONAL_DEFAULTS)
        settings.update(self.common_settings())
        settings.update(self.producer)
        if transactional_id is not None:
            settings["transactional.id"] = transactional_id
        return settings

    def consumer_settings(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> Settings:
        """Return consumer settings: safe defaults and offset reset, overrides, the group id.

        ``instance_id``, when given, becomes ``group.instance.id`` (static membership)
        and wins over an override, like the group id; an empty one is a
        :class:`~choreo.errors.ConfigurationError`.
        """
        settings: Settings = dict(CONSUMER_DEFAULTS)
        settings["auto.offset.reset"] = "earliest" if from_beginning else "latest"
        settings.update(self.common_settings())
        settings.update(self.consumer)
        settings["group.id"] = group_id
        if instance_id is not None:
            if not instance_id.strip():
                raise ConfigurationError("a static group member needs a non-empty instance id")
            settings["group.instance.id"] = instance_id
        return settings

    def __repr__(self) -> str:
        """Show every field with secret values masked (see :mod:`choreo.safety.redact`)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                shown: object = redact_settings(value)
            else:
                shown = redact_settings({f.name: value})[f.name]
            parts.append(f"{f.name}={shown!r}")
        return f"KafkaConfig({', '.join(parts)})"

    __str__ = __repr__


def _kafka_python_value(name: str, value: object) -> object:
    """Convert a librdkafka-style value (often a string) to what kafka-python expects."""
    if name == "ssl_check_hostname" and isinstance(value, str):
        return value.lower() == "https"
    if name == "compression_type" and isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if value.isdigit():
            return int(value)
    return value


_OAUTH_SETTINGS: Final = frozenset(
    {
        "sasl.oauthbearer.config", "sasl.oauthbearer.method", "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret", "sasl.oauthbearer.scope",
        "sasl.oauthbearer.token.endpoint.url", "enable.sasl.oauthbearer.unsecure.jwt",
    }
)
_NOT_FOR_KAFKA_PYTHON: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ssl.keystore.location": "convert the PKCS12 keystore to PEM files (openssl pkcs12 -in"
        " KEYSTORE -nodes -out client.pem) and set ssl.certificate.location and"
        " ssl.key.location",
        "ssl.ca.pem": "write the CA certificates to a file and set ssl.ca.location",
        "ssl.certificate.pem": "write the certificate to a file and set"
        " ssl.certificate.location",
        "ssl.key.pem": "write the key to a file (mode 600) and set ssl.key.location",
    }
)


def _kafka_python_extras(settings: Mapping[str, object], translated: Settings) -> None:
    """Add what kafka-python needs as objects: the OAUTHBEARER token provider (only with
    ``sasl.mechanism=OAUTHBEARER``; otherwise the ``sasl.oauthbearer.*`` settings are
    librdkafka's alone and left out)."""
    mechanism = settings.get("sasl.mechanism", settings.get("sasl.mechanisms", ""))
    if str(mechanism).upper() == "OAUTHBEARER":
        from choreo.transports.oauth import token_provider

        translated["sasl_oauth_token_provider"] = token_provider(settings)
    for name, fix in _NOT_FOR_KAFKA_PYTHON.items():
        if name in settings:
            raise ConfigurationError(f"kafka-python cannot use {name}: {fix}")


def to_kafka_python(settings: Mapping[str, object]) -> Settings:
    """Rename librdkafka-style settings to kafka-python keywords and convert their values.

    ``group.id`` becomes ``group_id``, ``sasl.username`` becomes
    ``sasl_plain_username``, ``ssl.ca.location`` becomes ``ssl_cafile`` and so on;
    names not in the table follow the rule "dots become underscores". OAUTHBEARER
    settings (``sasl.oauthbearer.*``) become a ``sasl_oauth_token_provider``
    (:func:`choreo.transports.oauth.token_provider`). Settings kafka-python cannot use
    (a PKCS12 keystore, inline PEM) raise :class:`ConfigurationError` saying what to
    use instead. Whether the client knows a name is checked where the client is built.
    """
    translated: Settings = {}
    _kafka_python_extras(settings, translated)
    for name, value in settings.items():
        if name in _OAUTH_SETTINGS:
            continue
        keyword = _KAFKA_PYTHON_NAMES.get(name, name.replace(".", "_"))
        translated[keyword] = _kafka_python_value(keyword, value)
    return translated
