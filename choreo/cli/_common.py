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

__all__ = [
    "KAFKA_CLIENTS",
    "close_transport",
    "import_from_cwd",
    "kafka_options",
    "new_tracker",
    "open_kafka",
    "wait_for_interrupt",
]

F = TypeVar("F", bound=Callable[..., Any])

KAFKA_CLIENTS: Final = ("confluent", "kafka-python")
"""The ``--transport`` choices of commands that talk to a Kafka cluster."""


def kafka_options(bootstrap_help: str) -> Callable[[F], F]:
    """Return a decorator adding ``--bootstrap HOST:PORT`` and ``--transport`` (the client).

    The command receives them as ``bootstrap: str | None`` and ``transport_kind: str``.
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
        return bootstrap(transport(func))

    return decorate


def open_kafka(transport_kind: str, bootstrap: str) -> Transport:
    """Return the ``transport_kind`` transport for the cluster at ``bootstrap``."""
    from choreo.transports.factory import open_transport

    return open_transport(transport_kind, bootstrap=bootstrap)


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
    directory; ``schemas_dir`` a directory of ``.avsc`` files. Either may be None.
    """
    from choreo.tracker.tracker import Tracker

    decode = None
    if schemas_dir is not None:
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


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
