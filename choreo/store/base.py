"""The :class:`Store` protocol: a service's one durable unit, and its schema migrations.

A store holds three things of one service, written in ONE database transaction per polled
batch: the **inbox** (event ids already handled, per consumer group), the **outbox**
(records waiting to be published, per origin) and the **service's own tables**, which the
handler writes through ``ctx.db`` (the store's :attr:`Store.connection`, a DB-API
connection inside that transaction). Offsets are committed only after that transaction
committed, and an outbox row is deleted only after the broker acknowledged it, so a crash
at any point loses nothing; a replay is a no-op because emitted ids are deterministic and
every consumer's inbox drops a copy.

Implementations: :class:`~choreo.store.memory.MemoryStore` (tests),
:class:`~choreo.store.sqlite.SqliteStore` (one replica, embedded) and
:class:`~choreo.store.postgres.PostgresStore` (any number of replicas sharing the state).
:func:`~choreo.store.url.open_store` opens one from a URL.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from choreo.errors import ConfigurationError
from choreo.store.outbox import OutboxRecord

__all__ = ["CHOREO_COMPONENT", "Migration", "Publish", "Store", "service_component"]

CHOREO_COMPONENT = "choreo"
"""The component name under which choreo's own tables are versioned."""

Publish = Callable[[Sequence[OutboxRecord]], None]
"""Publishes records and returns once the broker acknowledged every one (raises otherwise)."""

MigrationStep = str | Sequence[str] | Mapping[str, str | Sequence[str]] | Callable[[Any, str], None]


def service_component(service: str) -> str:
    """Return the component name under which ``service``'s own migrations are versioned."""
    return f"service:{service}"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered change of a schema, applied once per store, in version order.

    ``apply`` is one SQL statement, a sequence of statements, a mapping from dialect
    (``"sqlite"``, ``"postgresql"``) to statements for DDL that differs, or a callable
    ``apply(connection, dialect)``. Statements run in the migration's transaction, with
    the version recorded in ``choreo_schema_version`` in the same transaction.
    """

    version: int
    description: str
    apply: MigrationStep

    def __post_init__(self) -> None:
        """Reject versions below 1."""
        if self.version < 1:
            raise ConfigurationError(f"migration version {self.version} must be at least 1")

    def run(self, conn: Any, dialect: str) -> None:
        """Apply this migration on ``conn`` (a connection of ``dialect``) without committing."""
        step = self.apply
        if callable(step):
            step(conn, dialect)
            return
        if isinstance(step, Mapping):
            if dialect not in step:
                raise ConfigurationError(
                    f"migration {self.version} ({self.description}) has no SQL for {dialect}"
                )
            step = step[dialect]
        for statement in [step] if isinstance(step, str) else step:
            conn.execute(statement)


@runtime_checkable
class Store(Protocol):
    """A transactional store of handled event ids, records to publish and a service's tables.

    Writes happen between :meth:`begin` and :meth:`commit` (or :meth:`rollback`); the
    savepoint methods bracket one handler attempt so a failed attempt's writes to
    :attr:`connection` are undone without losing the rest of the batch. Every store is
    safe to share between the threads of one process (a worker, its relay, a publisher).
    """

    durable: bool
    """True when committed rows survive a crash of the process."""

    shared: bool
    """True when several replicas (processes, machines) may use the store at once."""

    dialect: str
    """``"memory"``, ``"sqlite"`` or ``"postgresql"``: which SQL :attr:`connection` speaks."""

    paramstyle: str
    """The DB-API paramstyle of :attr:`connection`: ``"qmark"`` (``?``) or ``"format"``."""

    @property
    def connection(self) -> Any:
        """Return what handlers get as ``ctx.db`` (a DB-API connection), or None."""
        ...

    def begin(self) -> None:
        """Begin a transaction (and hold the store's lock until commit or rollback)."""
        ...

    def commit(self) -> None:
        """Commit the transaction and release the lock."""
        ...

    def rollback(self) -> None:
        """Undo the transaction and release the lock."""
        ...

    def savepoint(self) -> None:
        """Mark the start of one handler attempt inside the transaction."""
        ...

    def release_savepoint(self) -> None:
        """Keep the writes made since :meth:`savepoint`."""
        ...

    def rollback_to_savepoint(self) -> None:
        """Undo the writes made since :meth:`savepoint`."""
        ...

    def seen(self, consumer: str, event_ids: Collection[str]) -> set[str]:
        """Return the ids among ``event_ids`` that ``consumer`` has already handled.

        On a shared store the other ids are claimed for this transaction: a replica
        handling the same ids at the same time waits for it and then sees them handled.
        """
        ...

    def add(self, consumer: str, event_ids: Sequence[str], handled_at_ms: int) -> None:
        """Record ``event_ids`` as handled by ``consumer``."""
        ...

    def enqueue(self, origin: str, records: Sequence[OutboxRecord]) -> None:
        """Store records to publish, after ``origin``'s earlier ones (ids are unique)."""
        ...

    def mark_sent(self, ids: Sequence[str]) -> None:
        """Remove the records with these ids from the outbox: they were acknowledged."""
        ...

    def pending(self, origin: str) -> list[OutboxRecord]:
        """Return ``origin``'s unsent records in the order they were stored."""
        ...

    def outbox_size(self, origin: str) -> int:
        """Return how many of ``origin``'s records are unsent (of every replica): the backlog."""
        ...

    def relay(self, origin: str, *, min_age_ms: int, limit: int, publish: Publish) -> int:
        """Publish about ``limit`` of ``origin``'s unsent records that this store did not write.

        Takes the records other store objects (a dead replica, an earlier run) stored at
        least ``min_age_ms`` ago, oldest first and in order per key, calls ``publish``
        and deletes them only when it returned; returns how many were published (a store
        that keeps a batch per row takes whole batches, so it may exceed ``limit``). On a
        shared store the records are claimed so concurrent relays never take the same.
        """
        ...

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[int]:
        """Apply the ``migrations`` of ``component`` not applied yet; return their versions.

        Idempotent, and safe when several replicas start together.
        """
        ...

    def prune(self, consumer: str, older_than_ms: int) -> int:
        """Forget ``consumer``'s inbox rows handled before ``older_than_ms``; return how many."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
