"""Which store each service of a test kit runs on: production's kind, in memory by default.

A handler gets ``ctx.db`` from its worker's store. Under the kit every service gets a
:class:`~choreo.store.sqlite.SqliteStore` on ``":memory:"`` unless the test gives its own
store, so a handler that writes its tables through ``ctx.db`` in production does the same
in its tests (its service's ``migrations`` create them), and one that works in its tests
works in production. Give ``stores=`` a mapping of service name to store, or a function
of the service returning one (e.g. a :class:`~choreo.store.postgres.PostgresStore` per
service); a service the mapping leaves out gets the default. The kit closes only the
stores it opened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from choreo.choreography.service import Service
from choreo.errors import ConfigurationError
from choreo.store import SqliteStore, Store, service_component

__all__ = ["KitStores", "StoreChoice"]

StoreChoice = Mapping[str, Store] | Callable[[Service], Store] | None
"""What ``SagaTestKit(stores=...)`` accepts."""


class KitStores:
    """The store of each service of a kit (see the module documentation)."""

    def __init__(self, services: list[Service], choice: StoreChoice = None) -> None:
        known = {service.name for service in services}
        if isinstance(choice, Mapping):
            unknown = sorted(set(choice) - known)
            if unknown:
                raise ConfigurationError(
                    f"stores= names {', '.join(unknown)}, which the kit does not run "
                    f"(its services: {', '.join(sorted(known))})"
                )
        self._by_name: dict[str, Store] = {}
        self._owned: list[Store] = []
        for service in services:
            self._by_name[service.name] = self._open(service, choice)

    def _open(self, service: Service, choice: StoreChoice) -> Store:
        given: Store | None = None
        if isinstance(choice, Mapping):
            given = choice.get(service.name)
        elif choice is not None:
            given = choice(service)
        if given is not None:
            return given
        store = SqliteStore(":memory:", durability="off")
        self._owned.append(store)
        return store

    def of(self, service: Service | str) -> Store:
        """Return the store of ``service`` (a service or its name)."""
        name = service if isinstance(service, str) else service.name
        store = self._by_name.get(name)
        if store is None:
            raise ConfigurationError(
                f"the kit runs no service named {name} (it runs {', '.join(sorted(self._by_name))})"
            )
        return store

    def prepare(self, service: Service) -> Store:
        """Return ``service``'s store with its migrations applied (as its worker would)."""
        store = self.of(service)
        store.migrate(service_component(service.name), service.migrations)
        return store

    def run(self, service: Service, work: Callable[[Any], object]) -> None:
        """Call ``work(connection)`` in one transaction of ``service``'s migrated store."""
        store = self.prepare(service)
        store.begin()
        try:
            work(store.connection)
        except BaseException:
            store.rollback()
            raise
        store.commit()

    def close(self) -> None:
        """Close the stores the kit opened (a test's own stores are left open)."""
        for store in self._owned:
            store.close()
        self._owned = []
