"""Place sample orders on a running shop: ``python -m services.placer --count 300 --bootstrap ...``.

Each order is stored in the order service's table and its ``OrderCreated`` start event in
the same store's outbox, in one local transaction (share the order service's store:
``--store postgresql://…`` / ``$CHOREO_STORE``, or ``--inbox`` for its SQLite file on a
volume both containers mount), then published. Used by
docker-compose's one-shot ``orders`` container; ``choreo demo`` does the same in-process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

__all__ = ["main"]

logger = logging.getLogger(__name__)


@click.command()
@click.option("--count", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample orders.")
@click.option("--bootstrap", metavar="HOST:PORT", required=True, help="Kafka bootstrap servers.")
@click.option(
    "--transport",
    type=click.Choice(["confluent", "kafka-python"]),
    default="confluent",
    show_default=True,
)
@click.option(
    "--store",
    "store_url",
    envvar="CHOREO_STORE",
    help="The order service's store URL (postgresql://… or sqlite:///…; or $CHOREO_STORE).",
)
@click.option(
    "--inbox",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The order service's SQLite file (the same as --store sqlite:///PATH).",
)
@click.option(
    "--schemas",
    "schemas_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The example's schema directory (default: found like choreo demo does).",
)
@click.option("--topic-prefix", default="", help="Prefix of every topic name.")
@click.option(
    "--style",
    type=click.Choice(["choreographed", "orchestrated"]),
    default="choreographed",
    show_default=True,
    help="Open choreographed sagas (OrderCreated) or orchestrated ones (OrderSubmitted).",
)
def main(
    *,
    count: int,
    seed: int,
    bootstrap: str,
    transport: str,
    store_url: str | None,
    inbox: Path | None,
    schemas_dir: Path | None,
    topic_prefix: str,
    style: str,
) -> None:
    """Place COUNT sample orders and exit once every start event is acknowledged."""
    from choreo.runtime import Publisher, WorkerConfig
    from choreo.runtime.serdes import serde_for
    from choreo.store import SqliteStore, open_store, service_component
    from choreo.transports.factory import open_transport
    from services.catalog import sample_orders
    from services.config import ServiceConfig
    from services.demo import find_schemas_dir
    from services.order import Orders, create, place_order

    if (store_url is None) == (inbox is None):
        raise click.UsageError("give the order service's store: --store URL or --inbox PATH")
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    service = create(ServiceConfig.from_env())
    serde = serde_for([service], schemas_dir=find_schemas_dir(schemas_dir))
    config = WorkerConfig(topic_naming=lambda event_type: topic_prefix + event_type)
    store = open_store(store_url) if store_url else SqliteStore(inbox or "")
    store.migrate(service_component(service.name), service.migrations)
    publisher = Publisher(
        service, open_transport(transport, bootstrap=bootstrap), serde, inbox=store, config=config
    )
    orders = Orders()
    started = time.monotonic()
    try:
        with publisher.batch():  # one flush for all the orders, not one per order
            for request in sample_orders(count, seed=seed):
                place_order(publisher, orders, request, orchestrated=style == "orchestrated")
    finally:
        publisher.close()
        store.close()
    click.echo(f"placed {count} orders in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":  # pragma: no cover - python -m services.placer
    main()
