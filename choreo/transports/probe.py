"""Check that a Kafka cluster can be reached and logged into, with an error that says why not.

A client library asked to talk to an unreachable broker retries until its timeouts run
out and then reports a generic transport failure (or, for a wrong password, nothing
better). :func:`check_cluster` fails fast instead, with a
:class:`~choreo.errors.ClusterUnreachableError` naming the address and the fix:

1. a TCP connection to each bootstrap address (refused, unknown host, timed out);
2. a metadata request through the chosen client, watching the client's own errors, so
   a failed SASL authentication, a TLS handshake failure or a certificate problem is
   named as such.

No secret appears in the message (see :mod:`choreo.safety.redact`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Final

from choreo._extras import require
from choreo.errors import ConfigurationError, TransportError
from choreo.transports.config import KafkaConfig, to_kafka_python

__all__ = ["check_cluster", "check_reachable"]

logger = logging.getLogger(__name__)
_QUIET: Final = logging.getLogger("choreo.transports.probe.clients")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())

DEFAULT_TIMEOUT_S: Final = 10.0
_END_EARLY_JOIN_S: Final = 5.0

_HOW_TO_FIX_ADDRESS: Final = (
    "check --bootstrap (or bootstrap.servers in --config) and that the broker is running"
    " and reachable from here"
)


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """Return the (host, port) pairs of a bootstrap list; raise for a malformed one."""
    found: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        entry = item.strip()
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigurationError(
                f"bootstrap address {item.strip()!r} is not HOST:PORT; give e.g."
                " --bootstrap kafka-1:9092,kafka-2:9092"
            )
        found.append((host.strip("[]"), int(port)))
    return found


def check_reachable(bootstrap: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Return once one bootstrap address accepts a TCP connection; raise otherwise.

    Raises :class:`TransportError` naming every address and why it failed, and what to fix.
    """
    problems: list[str] = []
    for host, port in _addresses(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror:
            problems.append(f"{host}:{port}: unknown host")
        except TimeoutError:
            problems.append(f"{host}:{port}: no answer within {timeout:.0f} s")
        except OSError as exc:
            problems.append(f"{host}:{port}: {exc.strerror or exc}")
    raise TransportError(
        f"cannot reach Kafka ({'; '.join(problems)}): {_HOW_TO_FIX_ADDRESS}", retriable=True
    )


def _explain(reason: str, config: KafkaConfig) -> str:
    """Return a client error turned into what happened and how to fix it."""
    lowered = reason.lower()
    where = config.bootstrap_servers
    if "authentication" in lowered or ("sasl" in lowered and "fail" in lowered):
        who = f"user {config.sasl_username!r} " if config.sasl_username else ""
        return (
            f"Kafka at {where} refused the login of {who}({config.sasl_mechanism or 'SASL'}):"
            f" {reason}. Check sasl.username and sasl.password (or sasl.jaas.config) in"
            " --config and the mechanism the cluster enables"
        )
    if any(word in lowered for word in ("ssl", "certificate", "handshake", "tls")):
        return (
            f"the TLS handshake with Kafka at {where} failed: {reason}. Check ssl.ca.location"
            " (the CA that signed the broker's certificate), the client certificate and key,"
            " and that security.protocol matches the listener (SSL or SASL_SSL)"
        )
    return (
        f"Kafka at {where} did not answer a metadata request: {reason}. Check"
        " security.protocol and the listener's port; "
        + _HOW_TO_FIX_ADDRESS
    )


def _probe_confluent(config: KafkaConfig, timeout: float) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []

    def on_error(error: Any) -> None:
        errors.append(str(error.str()) if hasattr(error, "str") else str(error))

    settings: dict[str, Any] = {
        **config.common_settings(),
        "error_cb": on_error,
        "logger": _QUIET,  # the probe's own error is the message; no log lines for it
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
    }
    try:
        admin = AdminClient(settings)
    except (ck.KafkaException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"invalid client settings: {exc}") from None
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except ck.KafkaException as exc:
            last = str(exc.args[0].str()) if exc.args else str(exc)
        admin.poll(0)  # serves error_cb
        fatal = sorted(
            (e for e in errors if any(w in e.lower() for w in ("authenticat", "ssl", "certif"))),
            key=lambda e: "authenticat" not in e.lower(),
        )
        if fatal:
            raise TransportError(_explain(fatal[0], config)) from None
    raise TransportError(_explain(errors[-1] if errors else last or "no answer", config))


class _Seen(logging.Handler):
    """Keeps the authentication and TLS failures kafka-python logs while it connects."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: list[str] = []
        self.disconnects = 0
        self.refused = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Authentication" in message:
            self.failures.insert(0, message)  # the most telling: kept first
            self.refused.set()
        elif "SSLError" in message or "certificate" in message.lower():
            self.failures.append(message)
        elif "disconnected" in message:
            self.disconnects += 1


def _kafka_python_connect(
    settings: dict[str, object], outcome: list[BaseException | None], made: list[Any]
) -> None:
    """Bootstrap an admin client and list topics; put the error (or None) in ``outcome``.

    The admin's network client is appended to ``made`` as soon as it exists.
    """
    import kafka

    from choreo.transports.kafka_python_build import build

    try:
        admin = build(kafka.KafkaAdminClient, settings, made)
        try:
            admin.list_topics()
        finally:
            admin.close()
    except Exception as exc:  # reported by the caller
        outcome.append(exc)
    else:
        outcome.append(None)


def _probe_kafka_python(config: KafkaConfig, timeout: float) -> None:
    require("kafka", "kafka-python", "the kafka-python transport")

    settings = to_kafka_python(config.common_settings())
    settings["request_timeout_ms"] = int(timeout * 1000)
    settings["bootstrap_timeout_ms"] = int(timeout * 1000)  # its thread ends with the probe
    settings.setdefault("reconnect_backoff_max_ms", 1000)  # retry (and see why) often
    seen = _Seen()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(seen)
    propagate, kafka_logger.propagate = kafka_logger.propagate, False  # the error says it all
    outcome: list[BaseException | None] = []
    made: list[Any] = []
    worker = threading.Thread(
        target=_kafka_python_connect,
        args=(settings, outcome, made),
        name="choreo-probe",
        daemon=True,
    )
    try:
        worker.start()
        deadline = time.monotonic() + 3 * timeout
        while worker.is_alive() and not seen.refused.is_set() and time.monotonic() < deadline:
            worker.join(0.05)
        result = list(outcome)
        _end_early(worker, made)
    finally:
        kafka_logger.removeHandler(seen)
        kafka_logger.propagate = propagate
    _raise_kafka_python_failure(config, seen, result, timeout)


def _end_early(worker: threading.Thread, made: list[Any]) -> None:
    """End a probe still bootstrapping (a refused login): close its client, join its thread.

    Left alone, its client would keep logging in again until its bootstrap timeout.
    """
    if not worker.is_alive():
        return
    from choreo.transports.kafka_python_build import close_network_client

    for client in list(made):
        close_network_client(client)
    worker.join(_END_EARLY_JOIN_S)


def _raise_kafka_python_failure(
    config: KafkaConfig, seen: _Seen, outcome: list[BaseException | None], timeout: float
) -> None:
    """Raise what the kafka-python probe's ``outcome`` and log lines say went wrong, if any."""
    import kafka.errors as kerr

    error = outcome[0] if outcome else None
    if seen.refused.is_set() or (error is not None and seen.failures):
        raise TransportError(_explain(seen.failures[0], config))
    if isinstance(error, kerr.KafkaConfigurationError):
        raise ConfigurationError(f"invalid client settings: {error}")
    protocol = (config.security_protocol or "").upper()
    if (error is not None or not outcome) and seen.disconnects and protocol.startswith("SASL"):
        # the broker answers a failed login by closing the connection, sometimes before
        # kafka-python has read the failure: say what that most likely means
        raise TransportError(_explain(
            f"the broker closed every connection during the login ({seen.disconnects}"
            " times): authentication failed or the client certificate was refused",
            config,
        ))
    if error is not None:
        raise TransportError(_explain(f"{type(error).__name__}: {error}", config))
    if not outcome:
        raise TransportError(_explain(f"no answer within {3 * timeout:.0f} s", config))


def check_cluster(kind: str, config: KafkaConfig, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Return once the cluster of ``config`` answers ``kind``'s client; raise a clear error.

    ``kind`` is ``confluent`` or ``kafka-python``. Raises
    :class:`~choreo.errors.TransportError` (unreachable, refused login, TLS failure) or
    :class:`~choreo.errors.ConfigurationError` (settings a client rejects), each saying
    what to fix.
    """
    check_reachable(config.bootstrap_servers, timeout)
    if kind == "confluent":
        _probe_confluent(config, timeout)
    elif kind == "kafka-python":
        _probe_kafka_python(config, timeout)
