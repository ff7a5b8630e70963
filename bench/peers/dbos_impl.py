"""DBOS Transact: the saga as one durable workflow with steps and compensations.

Two system databases: ``dbos-postgres`` keeps it in a database of its own (created by
DBOS, dropped after the run) on the run's PostgreSQL server, the same server
``choreo-postgres`` uses; ``dbos-sqlite`` in a SQLite file.

No Kafka: DBOS orchestrates rather than choreographs. A workflow per order calls the
same dict-updating steps as the raw loop (:mod:`bench.peers.choreography`), each a
``@DBOS.step()`` whose result DBOS checkpoints in its system database, and on a failure
runs the compensations in reverse order, exactly the events' path in the choreography:

    reserve -> charge -> create_shipment -> dispatch -> complete
    reservation failed:  reject
    payment declined:    release -> reject
    dispatch failed:     cancel -> refund -> release -> reject

With SQLite, the system database is (``system_database_url="sqlite:///<tmp>/dbos.sqlite"``, see
``DBOSConfig`` in the installed package), in a fresh temporary directory per run. The file
is switched to WAL journaling before DBOS opens it (DBOS leaves SQLite's default rollback
journal; WAL doubled its throughput here, 29 -> 57 sagas/s at 1,000 sagas, and is what
choreo's ``SqliteInbox`` uses); DBOS's other SQLite settings are its own. Workflows are
started with ``DBOS.start_workflow`` as fast as the harness can (each start durably
records the workflow first) and run on DBOS's executor, bounded here to ``MAX_THREADS``
threads (DBOS's default is unbounded: one thread per waiting workflow). A workflow reports
its end to the harness after its last step returned, which stands for "the terminal event
was observed".
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dbos import DBOS, DBOSConfig

from bench.peers import choreography as ch
from bench.peers.harness import RunContext
from bench.peers.shape import CHOREOGRAPHED, SagaShape

MAX_THREADS = 8

STATES: dict[str, dict[str, str]] = {s: {} for s in ch.SUBSCRIPTIONS}
_observer: list[Callable[[str, str], None]] = []

Result = tuple[str, dict[str, Any]]


@DBOS.step()
def reserve(event: dict[str, Any]) -> Result:
    """Inventory: reserve, or fail."""
    return ch.reserve(STATES["inventory"], event)


@DBOS.step()
def release(event: dict[str, Any]) -> Result:
    """Inventory: release (compensation)."""
    return ch.release(STATES["inventory"], event)


@DBOS.step()
def charge(event: dict[str, Any]) -> Result:
    """Payment: charge, or decline."""
    return ch.charge(STATES["payment"], event)


@DBOS.step()
def refund(event: dict[str, Any]) -> Result:
    """Payment: refund (compensation)."""
    return ch.refund(STATES["payment"], event)


@DBOS.step()
def create_shipment(event: dict[str, Any]) -> Result:
    """Shipping: create the shipment."""
    return ch.create_shipment(STATES["shipping"], event)


@DBOS.step()
def dispatch(event: dict[str, Any]) -> Result:
    """Shipping: dispatch (the pivot), or fail."""
    return ch.dispatch(STATES["shipping"], event)


@DBOS.step()
def cancel(event: dict[str, Any]) -> Result:
    """Shipping: cancel the shipment (compensation)."""
    return ch.cancel(STATES["shipping"], event)


@DBOS.step()
def complete(event: dict[str, Any]) -> Result:
    """Order: completed."""
    return ch.complete(STATES["order"], event)


@DBOS.step()
def reject(event: dict[str, Any]) -> Result:
    """Order: failed (compensates the start)."""
    return ch.reject(STATES["order"], event)


@DBOS.workflow()
def fulfil(created: dict[str, Any]) -> str:
    """Run one order's saga; return its terminal event type."""
    kind, event = reserve(created)
    if kind == ch.RESERVATION_FAILED:
        return _end(reject(event))
    kind, event = charge(event)
    if kind == ch.PAYMENT_DECLINED:
        _, released = release(event)
        return _end(reject(released))
    _, shipment = create_shipment(event)
    kind, event = dispatch(shipment)
    if kind == ch.DISPATCH_FAILED:
        _, cancelled = cancel(event)
        _, refunded = refund(cancelled)
        _, released = release(refunded)
        return _end(reject(released))
    return _end(complete(event))


def _end(result: Result) -> str:
    """Tell the harness the saga ended with ``result``'s event; return its type."""
    kind, event = result
    for observe in _observer:
        observe(event["order_id"], "completed" if kind == ch.ORDER_COMPLETED else "failed")
    return kind


class DbosImplementation:
    """DBOS launched in this process, its system database on PostgreSQL or SQLite."""

    uses_kafka = False
    shape: SagaShape = CHOREOGRAPHED

    def __init__(self, database: str) -> None:
        self.name = f"dbos-{database}"
        self.database = database
        self._dir: Path | None = None
        self._drop: tuple[str, str] | None = None  # (server URL, database) to drop at stop

    def _system_database_url(self, ctx: RunContext) -> str:
        """Return the system database URL: a new database on the server, or a SQLite file."""
        if self.database == "postgres":
            if not ctx.postgres_url:
                raise RuntimeError("dbos-postgres needs a PostgreSQL URL (--postgres-url)")
            name = f"peers_dbos_{ctx.run_tag}"
            self._drop = (ctx.postgres_url, name)
            return urlunsplit(urlsplit(ctx.postgres_url)._replace(path=f"/{name}"))
        self._dir = Path(tempfile.mkdtemp(prefix="peers-dbos-"))
        with sqlite3.connect(self._dir / "dbos.sqlite") as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent; DBOS keeps its defaults else
        return f"sqlite:///{self._dir / 'dbos.sqlite'}"

    def start(self, ctx: RunContext, service: str | None = None) -> None:
        """Configure DBOS and launch it (every step in this one process)."""
        _observer[:] = [ctx.observe]
        for per in STATES.values():
            per.clear()
        config: DBOSConfig = {
            "name": "peers-bench",
            "system_database_url": self._system_database_url(ctx),
            "max_executor_threads": MAX_THREADS,
            "log_level": "WARNING",
        }
        DBOS(config=config)
        DBOS.launch()
        logging.getLogger("dbos").setLevel(logging.WARNING)

    def submit(self, order_id: str, datum: dict[str, Any]) -> None:
        """Start the order's workflow (returns once DBOS recorded it)."""
        DBOS.start_workflow(fulfil, datum)

    def stop(self) -> None:
        """Shut DBOS down and remove its database."""
        DBOS.destroy(workflow_completion_timeout_sec=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        if self._drop is not None:
            import psycopg

            url, name = self._drop
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def states(self) -> dict[str, dict[str, str]]:
        """Return each service's state dict."""
        return STATES

    def failure(self) -> BaseException | None:
        """Return None: a failing workflow is retried or recorded by DBOS itself."""
        return None


def create_postgres() -> DbosImplementation:
    """Return DBOS Transact with its system database on PostgreSQL."""
    return DbosImplementation("postgres")


def create_sqlite() -> DbosImplementation:
    """Return DBOS Transact with its system database in SQLite (WAL)."""
    return DbosImplementation("sqlite")
