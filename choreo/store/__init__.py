"""Stores: a service's one durable unit (inbox, outbox, own tables) and its outbox relay.

:class:`Store` is the protocol (see :mod:`choreo.store.base`); :class:`MemoryStore`,
:class:`SqliteStore` and :class:`PostgresStore` implement it, :func:`open_store` opens one
from a URL, :class:`OutboxRelay` publishes rows that no live worker will, and
:func:`execute` runs SQL written with ``?`` placeholders on either database.

Which store when, and what it guarantees:

- :class:`MemoryStore`: tests and in-process demos; nothing survives the process.
- :class:`SqliteStore`: one replica per service, embedded; with the default
  ``durability="full"`` a committed batch survives SIGKILL and power loss; a lost machine
  loses the file. A worker refuses to start on it while another member of its consumer
  group is alive.
- :class:`PostgresStore`: any number of replicas sharing the service's state; a committed
  batch survives anything the PostgreSQL server survives (SIGKILL of any replica, a lost
  replica machine; the database's own durability and replication for the rest).

The old names ``Inbox``, ``MemoryInbox`` and ``SqliteInbox`` remain as aliases.
"""

from choreo.store.base import CHOREO_COMPONENT, Migration, Publish, Store, service_component
from choreo.store.guard import refuse_unshared_store
from choreo.store.memory import MemoryStore
from choreo.store.outbox import OutboxRecord, pack_headers, unpack_headers
from choreo.store.relay import OutboxRelay
from choreo.store.sql import execute, executemany, paramstyle_of
from choreo.store.sqlite import SqliteStore
from choreo.store.url import STORE_ENV, open_store

Inbox = Store
MemoryInbox = MemoryStore
SqliteInbox = SqliteStore


def __getattr__(name: str) -> object:
    """Import :class:`PostgresStore` lazily: it needs the optional psycopg packages."""
    if name == "PostgresStore":
        from choreo.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHOREO_COMPONENT",
    "STORE_ENV",
    "Inbox",
    "MemoryInbox",
    "MemoryStore",
    "Migration",
    "OutboxRecord",
    "OutboxRelay",
    "PostgresStore",
    "Publish",
    "SqliteInbox",
    "SqliteStore",
    "Store",
    "execute",
    "executemany",
    "open_store",
    "pack_headers",
    "paramstyle_of",
    "refuse_unshared_store",
    "service_component",
    "unpack_headers",
]
