"""``choreo run MODULE:SERVICE``: run one service's worker until SIGTERM or SIGINT.

An orchestrator (:class:`~choreo.orchestration.Orchestrator`, or its ``service``) runs
with :class:`~choreo.orchestration.OrchestratorRunner`: it rebuilds the sagas of each
partition it is assigned from the log, and a thread publishes its deadline notices.
The service object is imported from ``MODULE`` (the current directory is importable, as
with ``python -m``); the serde is built from the event classes the service declares and
the schemas in ``--schemas``; the store (inbox, outbox and the service's own tables) is
``--store`` / ``$CHOREO_STORE``: ``postgresql://…`` for several replicas sharing one state,
``sqlite:///path`` for one replica (default: ``./<service>.inbox.db``). On SIGTERM or
SIGINT the worker finishes the batch in hand, publishes and commits it, and closes.
``--instance-id`` (a stable id per replica, e.g. the pod name) makes a restart after a
crash immediate: the worker rejoins its group as the same static member.
``--partitions`` (``$CHOREO_TOPIC_PARTITIONS``) sizes the topics the worker creates, so
that several replicas share them; ``--replication-factor`` and ``--min-insync-replicas``
(``$CHOREO_TOPIC_REPLICATION_FACTOR``, ``$CHOREO_TOPIC_MIN_INSYNC_REPLICAS``) set their
replication (a cluster with fewer live brokers than asked for is an error, before any
topic is created, when a topic is missing; an existing topic with less replication
than asked is left as it is, with one warning each). A ``--store`` URL given on the
command line with a password draws a warning: ``ps`` shows it to every user (use ``$CHOREO_STORE``,
``$PGPASSWORD`` or ``~/.pgpass``).
``--relay-interval``, ``--relay-min-age`` and ``--relay-batch`` (or
``$CHOREO_RELAY_INTERVAL``, ``$CHOREO_RELAY_MIN_AGE``, ``$CHOREO_RELAY_BATCH``) tune the
outbox relay of a shared store (``WorkerConfig.relay_*``).

After start-up everything loaded so far (modules, schemas, compiled codecs) is moved out
of the garbage collector's view with :func:`gc.freeze`, so the worker's per-batch
collections do not walk it again and again.
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from choreo.choreography.service import Service
from choreo.cli._common import (
    config_option,
    import_from_cwd,
    open_kafka,
    replication_options,
    schemas_option,
)
from choreo.cli._observability import (
    log_format_option,
    metrics_port_option,
    stall_after_option,
    tracing_option,
    use_log_format,
    worker_observability,
)
from choreo.errors import ChoreoError
from choreo.safety.redact import redact_text

if TYPE_CHECKING:
    from choreo.orchestration import OrchestratorRunner

__all__ = ["load_service", "run", "warn_if_password_on_command_line"]

logger = logging.getLogger(__name__)


def load_service(target: str) -> Service:
    """Return the :class:`~choreo.Service` named by ``"module.path:attribute"``.

    Raises :class:`click.BadParameter` when the module or attribute cannot be found or is
    not a Service.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter("use MODULE:SERVICE, e.g. services.inventory:service")
    import_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name}: {exc} (run choreo from the project's root, where"
            f" {module_name.split('.')[0]} can be imported, or add its directory to PYTHONPATH)"
        ) from exc
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise click.BadParameter(
                f"{module_name} has no attribute {attribute}: name the Service object defined"
                f" there, e.g. {module_name}:<service variable>"
            ) from None
    as_service = getattr(found, "service", None)  # an Orchestrator runs as its service
    if not isinstance(found, Service) and isinstance(as_service, Service):
        found = as_service
    if not isinstance(found, Service):
        raise click.BadParameter(
            f"{target} is a {type(found).__name__}, not a choreo Service: name a"
            " choreo.Service (or an Orchestrator) object"
        )
    return found


def warn_if_password_on_command_line(store_url: str) -> None:
    """Log a warning when ``--store`` was given on the command line with a password in it.

    Every user of the machine can read a process's arguments (``ps``, ``/proc``); the
    environment (``$CHOREO_STORE``), ``$PGPASSWORD`` and ``~/.pgpass`` are private to it.
    """
    context = click.get_current_context(silent=True)
    if context is None or redact_text(store_url) == store_url:
        return
    if context.get_parameter_source("store_url") is ParameterSource.COMMANDLINE:
        logger.warning(
            "the --store URL holds a password, which any user of this machine can read in "
            "the process list (ps): give the URL in $CHOREO_STORE, or the password in "
            "$PGPASSWORD or ~/.pgpass, instead"
        )


def _with_hint(message: str, instance_id: str | None, group: str) -> str:
    """Return ``message`` with the two causes of a fenced instance id and what to do.

    The broker fences a static member when another join took its instance id: another
    live process with the same id (a configuration error), or this process's own earlier
    join whose answer was lost while the group's coordinator moved (seen when a broker
    dies; a restart recovers, and a supervisor restarts the replica).
    """
    if instance_id and "same group.instance.id" in message:
        return (
            f"{message}\nAnother member of group {group!r} took --instance-id {instance_id!r}:"
            " another live process runs with it (give every replica its own --instance-id,"
            " or $CHOREO_INSTANCE_ID), or this process's own earlier join, lost while the"
            " group's coordinator moved (a restart recovers)."
        )
    return message


@click.command("run")
@click.argument("target", metavar="MODULE:SERVICE")
@click.option(
    "--transport",
    "kind",
    type=click.Choice(["memory", "confluent", "kafka-python"]),
    default="confluent",
    show_default=True,
    help="Kafka client to use (memory is in-process: only for a smoke run).",
)
@click.option(
    "--bootstrap",
    envvar="CHOREO_KAFKA_BOOTSTRAP",
    help="Kafka bootstrap servers HOST:PORT (or $CHOREO_KAFKA_BOOTSTRAP).",
)
@config_option()
@schemas_option("Directory of the .avsc schemas of the service's events.", required=True)
@click.option(
    "--store",
    "store_url",
    envvar="CHOREO_STORE",
    help=(
        "The service's store (inbox, outbox, own tables): postgresql://user:pw@host/db "
        "(any number of replicas; ps shows arguments, so keep a password in $CHOREO_STORE, "
        "$PGPASSWORD or ~/.pgpass), sqlite:///relative.db or sqlite:////absolute.db (one "
        "replica) or $CHOREO_STORE [default: sqlite ./<service>.inbox.db]."
    ),
)
@click.option(
    "--inbox",
    "inbox_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A SQLite store file (the same as --store sqlite:///PATH).",
)
@click.option("--group", "group_id", help="Consumer group id [default: the service name].")
@click.option(
    "--instance-id",
    envvar="CHOREO_INSTANCE_ID",
    help=(
        "Stable id of this replica, unique in the group (e.g. the pod name; or "
        "$CHOREO_INSTANCE_ID). Makes the worker a static group member: after a crash or "
        "SIGKILL the restarted worker gets its partitions back at once instead of waiting "
        "out the dead member's session timeout. [default: none, a dynamic member]"
    ),
)
@click.option("--exactly-once", is_flag=True, help="Publish and commit in Kafka transactions.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--topic-prefix",
    default="",
    help="Prefix of every topic the service reads and writes (e.g. 'staging.').",
)
@click.option(
    "--partitions",
    "topic_partitions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="CHOREO_TOPIC_PARTITIONS",
    help=(
        "Partitions of each topic the worker creates because it is missing (existing topics "
        "are left as they are; $CHOREO_TOPIC_PARTITIONS). Replicas share a topic's "
        "partitions: give at least as many as replicas. Replication: --replication-factor."
    ),
)
@replication_options("the topics the worker creates")
@click.option(
    "--relay-interval",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    envvar="CHOREO_RELAY_INTERVAL",
    help="Seconds between the outbox relay's rounds on a shared store ($CHOREO_RELAY_INTERVAL).",
)
@click.option(
    "--relay-min-age",
    type=click.FloatRange(min=0.0),
    envvar="CHOREO_RELAY_MIN_AGE",
    help=(
        "Seconds an outbox row must be old before the relay takes it from another writer "
        "($CHOREO_RELAY_MIN_AGE) [default: 5 on a shared store]."
    ),
)
@click.option(
    "--relay-batch",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    envvar="CHOREO_RELAY_BATCH",
    help="Records the outbox relay claims per round ($CHOREO_RELAY_BATCH).",
)
@metrics_port_option("Prometheus metrics (/metrics) and the /healthz and /readyz probes")
@stall_after_option()
@tracing_option()
@log_format_option()
def run(
    *,
    target: str,
    kind: str,
    bootstrap: str | None,
    schemas_dir: Path,
    store_url: str | None,
    inbox_path: Path | None,
    group_id: str | None,
    instance_id: str | None,
    exactly_once: bool,
    concurrency: int,
    topic_prefix: str,
    topic_partitions: int = 1,
    topic_replication_factor: int | None = None,
    topic_min_insync_replicas: int | None = None,
    relay_interval: float = 1.0,
    relay_min_age: float | None = None,
    relay_batch: int = 500,
    metrics_address: tuple[str, int] | None = None,
    stall_after: float = 60.0,
    tracing: bool | None = None,
    log_format: str = "text",
) -> None:
    """Run the worker of MODULE:SERVICE until SIGTERM or SIGINT."""
    from choreo.runtime import Worker, WorkerConfig, deadletter_topic
    from choreo.runtime.serdes import serde_for
    from choreo.store import SqliteStore, open_store
    from choreo.transports.factory import open_transport

    service = load_service(target)
    use_log_format(log_format, service=service.name)
    if kind == "memory":
        logger.warning("the memory transport is in-process: use it only for a smoke run")
    try:
        serde = serde_for([service], schemas_dir=schemas_dir)
        transport = open_transport(kind) if kind == "memory" else open_kafka(kind, bootstrap)
        config = WorkerConfig(
            group_id=group_id,
            instance_id=instance_id or None,
            exactly_once=exactly_once,
            concurrency=concurrency,
            topic_naming=lambda event_type: f"{topic_prefix}{event_type}",
            deadletter_naming=lambda name: f"{topic_prefix}{deadletter_topic(name)}",
            topic_partitions=topic_partitions,
            topic_replication_factor=topic_replication_factor,
            topic_min_insync_replicas=topic_min_insync_replicas,
            relay_interval=relay_interval,
            relay_min_age=relay_min_age,
            relay_batch=relay_batch,
        )
        if store_url and inbox_path:
            raise click.UsageError(
                "give --store or --inbox, not both (--inbox PATH is --store sqlite:///PATH)"
            )
        if store_url:
            warn_if_password_on_command_line(store_url)
            inbox = open_store(store_url)
        else:
            inbox = SqliteStore(inbox_path or Path(f"{service.name}.inbox.db"))
    except ChoreoError as exc:
        raise click.ClickException(str(exc)) from exc
    observed = worker_observability(
        metrics_address=metrics_address, stall_after=stall_after, tracing=tracing
    )
    orchestrator = getattr(service, "orchestrator", None)
    worker: Worker | OrchestratorRunner
    if orchestrator is None:
        worker = Worker(
            service, transport, serde, config=config, inbox=inbox, middleware=observed.middleware()
        )
    else:  # an orchestrator: rebuild its sagas from the log, watch its deadlines
        from choreo.orchestration import OrchestratorRunner

        worker = OrchestratorRunner(
            orchestrator,
            transport,
            serde,
            config=config,
            inbox=inbox,
            middleware=observed.middleware(),
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info(
            "[%s] %s received: finishing the batch in hand",
            service.name,
            signal.Signals(signum).name,
        )
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    gc.collect()
    gc.freeze()
    logger.info(
        "[%s] running on %s%s, store %r",
        service.name,
        kind,
        f" ({bootstrap})" if bootstrap and kind != "memory" else "",
        inbox,
    )
    try:
        worker.run(stop)
    except ChoreoError as exc:
        message = _with_hint(str(exc), instance_id, group_id or service.name)
        raise click.ClickException(message) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        inbox.close()
        observed.close()
    logger.info("[%s] stopped", service.name)
