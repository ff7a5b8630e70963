"""What several ``choreo`` commands share: Kafka options, opening a transport, a tracker.

Heavy modules (Kafka clients, the tracker, the codec) are imported inside the functions,
so importing this module keeps ``choreo --help`` fast.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

if TYPE_CHECKING:
    from choreo.transports.base import Transport
    from choreo.transports.config import KafkaConfig

__all__ = [
    "KAFKA_CLIENTS",
    "client_config",
    "client_properties",
    "close_transport",
    "config_option",
    "configured_bootstrap",
    "deadline_option",
    "graph_option",
    "import_from_cwd",
    "kafka_options",
    "new_tracker",
    "open_kafka",
    "registry_decoder",
    "registry_option",
    "schemas_option",
    "wait_for_interrupt",
]

F = TypeVar("F", bound=Callable[..., Any])

KAFKA_CLIENTS: Final = ("confluent", "kafka-python")
"""The ``--transport`` choices of commands that talk to a Kafka cluster."""


CONFIG_META: Final = "choreo.kafka_config_file"
"""Where the ``--config`` option leaves the client properties file in the click context."""


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta[CONFIG_META] = value


def config_option() -> Callable[[F], F]:
    """Return the ``--config FILE`` option: Kafka client properties (Java format).

    The value is not passed to the command; :func:`client_config` reads it.
    """
    return click.option(
        "--config",
        "kafka_config_file",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="CHOREO_KAFKA_CONFIG",
        expose_value=False,
        callback=_remember_config,
        help=(
            "Kafka client properties (the Java client.properties format: security.protocol,"
            " sasl.*, ssl.*, sasl.jaas.config...; or $CHOREO_KAFKA_CONFIG). Properties may"
            " also be set as $CHOREO_KAFKA_<PROPERTY>, e.g. CHOREO_KAFKA_SASL_PASSWORD."
        ),
    )


def client_properties() -> dict[str, str]:
    """Return the client properties of ``--config`` (if given) overlaid with the environment's."""
    from choreo.transports.properties import env_properties, load_properties

    ctx = click.get_current_context(silent=True)
    path = ctx.meta.get(CONFIG_META) if ctx is not None else None
    properties = load_properties(path) if path is not None else {}
    properties.update(env_properties())
    return properties


REGISTRY_META: Final = "choreo.schema_registry_url"


def _remember_registry(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[REGISTRY_META] = value


def registry_option() -> Callable[[F], F]:
    """Return the ``--registry URL`` option: decode the Confluent wire format with a registry.

    Credentials come from ``$CHOREO_SCHEMA_REGISTRY_AUTH`` (``user:password``), from
    ``basic.auth.user.info`` in the ``--config`` file, or from the URL; TLS settings from
    ``schema.registry.ssl.*`` properties. Read by :func:`new_tracker`.
    """
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        envvar="CHOREO_SCHEMA_REGISTRY_URL",
        expose_value=False,
        callback=_remember_registry,
        help=(
            "Schema registry (Confluent API) to decode Confluent wire-format payloads (or"
            " $CHOREO_SCHEMA_REGISTRY_URL, or schema.registry.url in --config); credentials"
            " in $CHOREO_SCHEMA_REGISTRY_AUTH as user:password or basic.auth.user.info."
        ),
    )


def registry_decoder(schemas_dir: Path | None) -> Callable[[bytes], Any] | None:
    """Return a decoder of Confluent wire-format payloads when a registry is configured.

    Writer schemas come from the registry; ``schemas_dir``, when given, holds the
    reader schemas. Returns None without a registry.
    """
    from choreo.transports.properties import registry_client_config

    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(REGISTRY_META) if ctx is not None else None
    settings = registry_client_config(
        client_properties(), url=url, user_info=os.environ.get("CHOREO_SCHEMA_REGISTRY_AUTH")
    )
    if settings is None:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from choreo.avro.confluent import ConfluentCodec
    from choreo.avro.loader import LocalSchemaRegistry, load_directory

    local = load_directory(schemas_dir) if schemas_dir is not None else LocalSchemaRegistry()
    codec = ConfluentCodec(SchemaRegistryClient(settings), local, auto_register=False)
    return codec.decode_any


def configured_bootstrap() -> str | None:
    """Return ``bootstrap.servers`` from ``--config`` or the environment, if set."""
    return client_properties().get("bootstrap.servers") or None


def client_config(bootstrap: str | None) -> KafkaConfig:
    """Return the Kafka configuration of a command: ``--config``, environment, ``--bootstrap``.

    Raises :class:`~choreo.errors.ConfigurationError` saying what to fix.
    """
    from choreo.transports.properties import kafka_config

    return kafka_config(client_properties(), bootstrap=bootstrap)


def kafka_options(bootstrap_help: str) -> Callable[[F], F]:
    """Return a decorator adding ``--bootstrap HOST:PORT``, ``--transport`` and ``--config``.

    The command receives ``bootstrap: str | None`` and ``transport_kind: str``; the
    client properties file of ``--config`` is read by :func:`open_kafka`.
    """
    bootstrap = click.option("--bootstrap", metavar="HOST:PORT", help=bootstrap_help)
    transport = click.option(
        "--transport",
        "transport_kind",
        type=click.Choice(KAFKA_CLIENTS),
        default="confluent",
        show_default=True,
        help="Kafka client used with --bootstrap.",
    )

    def decorate(func: F) -> F:
        return bootstrap(transport(config_option()(func)))

    return decorate


def replication_options(created: str) -> Callable[[F], F]:
    """Return ``--replication-factor`` and ``--min-insync-replicas`` for the topics ``created``.

    The same options and environment variables (``$CHOREO_TOPIC_REPLICATION_FACTOR``,
    ``$CHOREO_TOPIC_MIN_INSYNC_REPLICAS``) wherever choreo creates topics, so one setting
    covers a deployment. The command receives ``topic_replication_factor`` and
    ``topic_min_insync_replicas`` (``int | None``: None is the cluster's default).
    """
    from choreo.transports.replication import MAX_REPLICATION_FACTOR

    factor = click.option(
        "--replication-factor",
        "topic_replication_factor",
        type=click.IntRange(min=1, max=MAX_REPLICATION_FACTOR),
        envvar="CHOREO_TOPIC_REPLICATION_FACTOR",
        help=(
            f"Replicas of each partition of {created} "
            "($CHOREO_TOPIC_REPLICATION_FACTOR); the cluster needs at least that many live "
            "brokers, and an existing topic with fewer gets a warning. "
            "[default: the cluster's default.replication.factor]"
        ),
    )
    insync = click.option(
        "--min-insync-replicas",
        "topic_min_insync_replicas",
        type=click.IntRange(min=1, max=MAX_REPLICATION_FACTOR),
        envvar="CHOREO_TOPIC_MIN_INSYNC_REPLICAS",
        help=(
            f"min.insync.replicas of {created}: replicas that must have a "
            "record before it counts as written (at most the replication factor; "
            "$CHOREO_TOPIC_MIN_INSYNC_REPLICAS). [default: the broker's]"
        ),
    )

    def decorate(func: F) -> F:
        return factor(insync(func))

    return decorate


def schemas_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    """Return the ``--schemas DIR`` option (an existing directory of ``.avsc`` files).

    The command receives ``schemas_dir: Path | None`` (a Path when ``required``).
    """
    return click.option(
        "--schemas",
        "schemas_dir",
        required=required,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=help_text,
    )


def graph_option(help_text: str) -> Callable[[F], F]:
    """Return the ``--graph MODULE`` option naming the module that declares the services.

    The command receives ``graph: str | None`` (``module`` or ``module:attribute``).
    """
    return click.option("--graph", metavar="MODULE", help=help_text)


def deadline_option(help_text: str, *, minimum: float = 0.001) -> Callable[[F], F]:
    """Return the ``--deadline SECONDS`` option (default 30 s): how long a saga may wait.

    The command receives ``deadline: float``.
    """
    return click.option(
        "--deadline",
        type=click.FloatRange(min=minimum),
        default=30.0,
        show_default=True,
        help=help_text,
    )


def open_kafka(transport_kind: str, bootstrap: str | None) -> Transport:
    """Return the ``transport_kind`` transport for the cluster of ``--bootstrap``/``--config``.

    The cluster is checked first (reachable, login accepted, TLS handshake), so a command
    fails within seconds with an error saying what to fix instead of waiting out the
    client's timeouts. Raises :class:`~choreo.errors.ConfigurationError` or
    :class:`~choreo.errors.TransportError`.
    """
    from choreo.transports.factory import open_transport
    from choreo.transports.probe import check_cluster

    config = client_config(bootstrap)
    check_cluster(transport_kind, config)
    return open_transport(transport_kind, config=config)


def close_transport(transport: object) -> None:
    """Close ``transport`` if it has a ``close`` method (the Kafka ones release clients)."""
    close = getattr(transport, "close", None)
    if close is not None:
        close()


def import_from_cwd() -> None:
    """Put the current directory first on ``sys.path`` (as ``python -m`` does), once."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def new_tracker(
    *,
    schemas_dir: Path | None = None,
    choreography: str | None = None,
    deadline_s: float = 30.0,
    keep_finished: int = 1_000,
) -> Any:
    """Return an empty Tracker that decodes with ``schemas_dir`` and knows ``choreography``.

    ``choreography`` is a module or ``module:attribute`` importable from the current
    directory; ``schemas_dir`` a directory of ``.avsc`` files. Either may be None. With
    ``--registry`` (see :func:`registry_option`) payloads are decoded in the Confluent
    wire format, writer schemas fetched from the registry.
    """
    from choreo.tracker.tracker import Tracker

    decode = registry_decoder(schemas_dir)
    if decode is None and schemas_dir is not None:
        from choreo.avro.codec import SingleObjectCodec
        from choreo.avro.loader import load_directory

        decode = SingleObjectCodec(load_directory(schemas_dir)).decode_any
    declared = None
    if choreography is not None:
        from choreo.choreography.discovery import load_choreography

        import_from_cwd()
        declared = load_choreography(choreography)
    return Tracker(
        choreography=declared,
        default_deadline_s=deadline_s,
        decode=decode,
        keep_finished=keep_finished,
    )


def wait_for_interrupt(
    running: Callable[[], bool] = lambda: True, *, poll_seconds: float = 1.0
) -> None:
    """Block until Ctrl-C or SIGTERM, or until ``running()`` turns false.

    ``running`` is asked every ``poll_seconds``. SIGTERM's previous handler is restored
    on return.
    """
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while running() and not stop.wait(poll_seconds):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
