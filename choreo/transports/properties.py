"""Kafka client properties from a file and the environment, for both Kafka clients.

Kafka users already hold their cluster's settings as a Java ``client.properties`` file
(``bootstrap.servers``, ``security.protocol``, ``sasl.jaas.config``, truststores...).
:func:`load_properties` reads that format; environment variables
``CHOREO_KAFKA_<PROPERTY>`` add or override single properties (upper case, dots as
underscores: ``CHOREO_KAFKA_SASL_PASSWORD`` is ``sasl.password``);
:func:`kafka_config` turns the result into a :class:`~choreo.transports.config.KafkaConfig`
in librdkafka naming, which the confluent transport uses as is and the kafka-python
transport translates (:func:`~choreo.transports.config.to_kafka_python`).

Both spellings are accepted. Java-only properties are translated:

- ``sasl.jaas.config`` with ``PlainLoginModule``/``ScramLoginModule``: ``username`` and
  ``password`` become ``sasl.username`` and ``sasl.password``; with
  ``OAuthBearerLoginModule``: ``clientId``/``clientSecret``/``scope`` become OIDC client
  credentials (with ``sasl.oauthbearer.token.endpoint.url``), and
  ``unsecuredLoginStringClaim_sub`` an unsecured token's principal (test clusters);
- a PEM truststore (``ssl.truststore.type=PEM``) becomes ``ssl.ca.location``; a PEM
  keystore the client certificate and key; a PKCS12 keystore ``ssl.keystore.location``;
  inline PEM (``ssl.truststore.certificates``, ``ssl.keystore.certificate.chain``,
  ``ssl.keystore.key``) ``ssl.ca.pem``, ``ssl.certificate.pem``, ``ssl.key.pem``;
- ``ssl.endpoint.identification.algorithm=`` (empty, Java's "off") becomes ``none``;
- serializer and deserializer classes are ignored.

JKS stores cannot be read by either Python client: the error says how to convert them.
Schema registry properties (``schema.registry.url``, ``basic.auth.user.info``, ``bearer.auth.*``,
``schema.registry.*``) are kept apart (:func:`registry_properties`) and never given to a
Kafka client. ``producer.``/``consumer.``-prefixed properties apply to that client only.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from choreo.errors import ConfigurationError
from choreo.safety.redact import redact_url, register_settings
from choreo.transports.config import KafkaConfig

__all__ = [
    "ENV_PREFIX",
    "env_properties",
    "kafka_config",
    "load_properties",
    "parse_properties",
    "registry_client_config",
    "registry_properties",
]

ENV_PREFIX: Final = "CHOREO_KAFKA_"
"""Environment variables with this prefix are client properties (``CONFIG`` excepted)."""
MAX_FILE_BYTES: Final = 1_000_000
"""The largest properties file read."""

_ENV_NOT_PROPERTIES: Final = frozenset({"CONFIG", "BOOTSTRAP"})
_IGNORED: Final = frozenset(
    {
        "key.serializer", "value.serializer", "key.deserializer", "value.deserializer",
        "ssl.truststore.type", "ssl.keystore.type", "sasl.login.callback.handler.class",
        "sasl.client.callback.handler.class", "basic.auth.credentials.source",
        "bearer.auth.credentials.source",
    }
)
_REGISTRY: Final = re.compile(r"^(schema\.registry\.|basic\.auth\.|bearer\.auth\.)")
_FIELDS: Final = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}
_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
_ESCAPES: Final = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_JAAS_OPTION: Final = re.compile(r'(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)')


def _unescape(text: str) -> str:
    """Resolve the backslash escapes of a properties key or value."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Return (line number, line) with comments dropped and continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip() if pending else raw.strip()
        if not pending:
            if not line or line[0] in "#!":
                continue
            start = number
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending.append(line[:-1])
            continue
        pending.append(line)
        lines.append((start, "".join(pending)))
        pending = []
    if pending:
        lines.append((start, "".join(pending)))
    return lines


def parse_properties(text: str, *, source: str = "properties") -> dict[str, str]:
    """Return the key/value pairs of Java ``.properties`` text (the last value of a key wins).

    ``key=value``, ``key: value`` and ``key value`` are read; ``#``/``!`` comment lines,
    backslash line continuations and escapes (``\\t``, ``\\n``, ``\\uXXXX``, ``\\=``...) are
    honoured. Raises :class:`ConfigurationError` naming ``source`` and the line of an
    empty key.
    """
    properties: dict[str, str] = {}
    for number, line in _logical_lines(text):
        match = re.match(r"((?:[^\\:=\s]|\\.)*)\s*[:=]?\s*(.*)$", line, re.S)
        assert match is not None  # the pattern matches any text
        key, value = _unescape(match.group(1)), _unescape(match.group(2))
        if not key:
            raise ConfigurationError(f"{source}, line {number}: a property without a name")
        properties[key] = value
    return properties


def load_properties(path: Path) -> dict[str, str]:
    """Return the properties of the file at ``path`` (UTF-8, or Latin-1 as Java reads it).

    Raises :class:`ConfigurationError` saying what to fix when the file is missing,
    unreadable or larger than :data:`MAX_FILE_BYTES`.
    """
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigurationError(
                f"client properties file {path} has {size} bytes (at most {MAX_FILE_BYTES}):"
                " is it the right file?"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the client properties file {path}: {exc.strerror or exc};"
            " check the path given to --config (or $CHOREO_KAFKA_CONFIG)"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_properties(text, source=str(path))


def env_properties(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the client properties set as ``CHOREO_KAFKA_<PROPERTY>`` environment variables.

    ``CHOREO_KAFKA_SASL_PASSWORD`` is ``sasl.password``; ``CHOREO_KAFKA_BOOTSTRAP`` is
    ``bootstrap.servers``; ``CHOREO_KAFKA_CONFIG`` names the properties file and is not a
    property.
    """
    environ = os.environ if environ is None else environ
    properties: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        suffix = name[len(ENV_PREFIX) :]
        if suffix == "BOOTSTRAP":
            properties["bootstrap.servers"] = value
        elif suffix and suffix not in _ENV_NOT_PROPERTIES:
            properties[suffix.lower().replace("_", ".")] = value
    return properties


def registry_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """Return the schema registry properties among ``properties`` (``schema.registry.``
    prefix dropped: ``url``, ``basic.auth.user.info``, ``ssl.ca.location``...)."""
    found: dict[str, str] = {}
    for name, value in properties.items():
        if _REGISTRY.match(name):
            short = name.removeprefix("schema.registry.")
            found[short] = value
    return found


_REGISTRY_CLIENT_KEYS: Final = frozenset(
    {
        "url", "basic.auth.user.info", "ssl.ca.location", "ssl.certificate.location",
        "ssl.key.location", "ssl.key.password", "timeout", "max.retries",
        "bearer.auth.credentials.source", "bearer.auth.token", "bearer.auth.logical.cluster",
        "bearer.auth.identity.pool.id", "bearer.auth.client.id", "bearer.auth.client.secret",
        "bearer.auth.scope", "bearer.auth.issuer.endpoint.url",
    }
)


def registry_client_config(
    properties: Mapping[str, str], *, url: str | None = None, user_info: str | None = None
) -> dict[str, str] | None:
    """Return the settings of a Confluent schema registry client, or None when no URL is set.

    ``url`` (``--registry``) and ``user_info`` (``user:password``) win over the
    ``schema.registry.url`` and ``basic.auth.user.info`` properties; credentials in the
    URL itself (``https://user:password@host``) are moved to ``basic.auth.user.info``.
    Every secret is registered for redaction.
    """
    found = registry_properties(properties)
    settings = {k: v for k, v in found.items() if k in _REGISTRY_CLIENT_KEYS}
    if url:
        settings["url"] = url
    if user_info:
        settings["basic.auth.user.info"] = user_info
    address = settings.get("url")
    if not address:
        return None
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"schema registry URL {redact_url(address)!r} must start with http:// or https://"
        )
    if parsed.password is not None:
        user = urllib.parse.unquote(parsed.username or "")
        password = urllib.parse.unquote(parsed.password)
        settings.setdefault("basic.auth.user.info", f"{user}:{password}")
        host = parsed.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parsed.port:
            netloc += f":{parsed.port}"
        settings["url"] = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    register_settings(settings)
    return settings


def _jaas(value: str) -> tuple[str, dict[str, str]]:
    """Return the login module and options of a ``sasl.jaas.config`` value."""
    module, _, rest = value.strip().partition(" ")
    options = {}
    for key, raw in _JAAS_OPTION.findall(rest):
        quoted = raw.startswith('"')
        options[key] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if quoted else raw
    return module.rsplit(".", 1)[-1], options


def _translate_jaas(value: str, out: dict[str, str]) -> None:
    module, options = _jaas(value)
    if module in ("PlainLoginModule", "ScramLoginModule"):
        if "username" not in options or "password" not in options:
            raise ConfigurationError(
                f"sasl.jaas.config ({module}) needs username=\"...\" and password=\"...\""
            )
        out.setdefault("sasl.username", options["username"])
        out.setdefault("sasl.password", options["password"])
    elif module == "OAuthBearerLoginModule":
        if "unsecuredLoginStringClaim_sub" in options:
            out.setdefault(
                "sasl.oauthbearer.config",
                f"principal={options['unsecuredLoginStringClaim_sub']}",
            )
            out.setdefault("enable.sasl.oauthbearer.unsecure.jwt", "true")
        else:
            for java, native in (("clientId", "sasl.oauthbearer.client.id"),
                                 ("clientSecret", "sasl.oauthbearer.client.secret"),
                                 ("scope", "sasl.oauthbearer.scope")):
                if java in options:
                    out.setdefault(native, options[java])
            out.setdefault("sasl.oauthbearer.method", "oidc")
    else:
        raise ConfigurationError(
            f"sasl.jaas.config uses {module}, which choreo cannot map: use PlainLoginModule,"
            " ScramLoginModule or OAuthBearerLoginModule, or set sasl.username/sasl.password"
        )


def _jks(what: str, path: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} {path} is a JKS store, which the Python Kafka clients cannot read: convert it"
        f" to PEM (keytool -exportcert -rfc -keystore {path} -alias <alias> -file ca.pem for a"
        " truststore; keytool -importkeystore -deststoretype PKCS12 then openssl pkcs12"
        " -nodes for a keystore) and set ssl.ca.location / ssl.certificate.location /"
        " ssl.key.location"
    )


def _translate_stores(props: Mapping[str, str], out: dict[str, str]) -> None:
    trust = props.get("ssl.truststore.location")
    if trust:
        kind = props.get("ssl.truststore.type", "JKS").upper()
        if kind != "PEM":
            raise _jks("ssl.truststore.location", trust) if kind == "JKS" else ConfigurationError(
                f"ssl.truststore.type {kind} is not supported: use a PEM truststore"
                " (ssl.truststore.type=PEM) or ssl.ca.location"
            )
        out.setdefault("ssl.ca.location", trust)
    keystore = props.get("ssl.keystore.location")
    if keystore:
        kind = props.get("ssl.keystore.type", "JKS").upper()
        if kind == "PEM":
            out.setdefault("ssl.certificate.location", keystore)
            out.setdefault("ssl.key.location", keystore)
        elif kind == "PKCS12":
            out["ssl.keystore.location"] = keystore
        else:
            raise _jks("ssl.keystore.location", keystore)
    for java, native in (("ssl.truststore.certificates", "ssl.ca.pem"),
                         ("ssl.keystore.certificate.chain", "ssl.certificate.pem"),
                         ("ssl.keystore.key", "ssl.key.pem")):
        if props.get(java):
            out.setdefault(native, props[java])


def _native(props: Mapping[str, str]) -> dict[str, str]:
    """Return ``props`` in librdkafka naming (Java-only properties translated)."""
    out: dict[str, str] = {}
    consumed = {"sasl.jaas.config", "ssl.truststore.location", "ssl.keystore.location",
                "ssl.truststore.certificates", "ssl.keystore.certificate.chain",
                "ssl.keystore.key"}
    for name, value in props.items():
        if name in consumed or name in _IGNORED or _REGISTRY.match(name):
            continue
        off = name == "ssl.endpoint.identification.algorithm" and not value.strip()
        out[name] = "none" if off else value
    if props.get("sasl.jaas.config"):
        _translate_jaas(props["sasl.jaas.config"], out)
    _translate_stores(props, out)
    return out


def _check(settings: Mapping[str, str]) -> None:
    protocol = settings.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in _PROTOCOLS:
        raise ConfigurationError(
            f"security.protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}"
        )
    mechanism = settings.get("sasl.mechanism", settings.get("sasl.mechanisms"))
    if mechanism is not None and mechanism.upper() not in _MECHANISMS:
        raise ConfigurationError(
            f"sasl.mechanism {mechanism!r} is not one of {', '.join(_MECHANISMS)}"
        )
    if protocol.startswith("SASL") and mechanism is None:
        raise ConfigurationError(
            f"security.protocol {protocol} needs sasl.mechanism (PLAIN, SCRAM-SHA-256,"
            " SCRAM-SHA-512 or OAUTHBEARER)"
        )


def kafka_config(
    properties: Mapping[str, str],
    *,
    bootstrap: str | None = None,
    client_id: str = "choreo",
) -> KafkaConfig:
    """Return the :class:`KafkaConfig` for client ``properties`` (either naming).

    ``bootstrap`` (from ``--bootstrap``) wins over ``bootstrap.servers``. Security
    properties fill the config's fields; ``producer.X``/``consumer.X`` go to that
    client only; the rest apply to every client. Raises :class:`ConfigurationError`
    saying what to fix for a missing address, an unknown protocol or mechanism, a SASL
    protocol without mechanism, or a store the clients cannot read.
    """
    native = _native(properties)
    servers = bootstrap or native.pop("bootstrap.servers", None)
    native.pop("bootstrap.servers", None)
    if not servers:
        raise ConfigurationError(
            "no Kafka address: give --bootstrap HOST:PORT, bootstrap.servers in the"
            " --config file, or $CHOREO_KAFKA_BOOTSTRAP"
        )
    _check(native)
    fields: dict[str, str] = {}
    common: dict[str, object] = {}
    producer: dict[str, object] = {}
    consumer: dict[str, object] = {}
    for name, value in native.items():
        if name in _FIELDS:
            fields[_FIELDS[name]] = value
        elif name.startswith("producer."):
            producer[name.removeprefix("producer.")] = value
        elif name.startswith("consumer."):
            consumer[name.removeprefix("consumer.")] = value
        elif name != "client.id":
            common[name] = value
    return KafkaConfig(
        bootstrap_servers=servers,
        client_id=native.get("client.id", client_id),
        common=common,
        producer=producer,
        consumer=consumer,
        **fields,
    )
