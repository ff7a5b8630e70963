"""``choreo demo``: run the order-fulfilment example, show a summary, serve the trace viewer.

With no arguments: the five example services on the in-memory bus place 300 orders
(about 20% declined payments, 5% failed dispatches, a few out of stock), a progress bar
follows them, a table counts the sagas per state, and the web viewer serves the traces
on 127.0.0.1:8765 (or the next free port) until Ctrl-C. ``--no-ui`` prints and exits:
0 when every saga ended and the services' state checks out, 1 otherwise. With
``--bootstrap`` the same demo runs on a real Kafka cluster (topics are created first,
under a per-run prefix).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from choreo.cli._common import (
    client_config,
    configured_bootstrap,
    deadline_option,
    kafka_options,
    schemas_option,
    wait_for_interrupt,
)
from choreo.errors import ChoreoError

if TYPE_CHECKING:
    from rich.console import Console

    from services.demo import DemoResult

__all__ = ["demo"]

_PORT_ATTEMPTS = 20
F = TypeVar("F", bound=Callable[..., Any])


def _share_option(flag: str, default: float, help_text: str) -> Callable[[F], F]:
    """Return an option taking a share between 0 and 1 (a rate of failures)."""
    return click.option(
        flag, type=click.FloatRange(0, 1), default=default, show_default=True, help=help_text
    )


def _serve(tracker: Any, port: int) -> Any:
    """Return a started ViewerServer on 127.0.0.1:``port`` or the next free port."""
    from choreo.viewer.web import ViewerServer

    last: OSError | None = None
    for candidate in range(port, port + _PORT_ATTEMPTS) if port else [0]:
        try:
            server = ViewerServer(tracker, host="127.0.0.1", port=candidate)
        except OSError as exc:
            last = exc
            continue
        server.start()
        return server
    raise click.ClickException(
        f"no free port from {port} to {port + _PORT_ATTEMPTS - 1}: {last}; give another with"
        " --port (0 picks any free port)"
    )


def _summary(console: Console, result: DemoResult) -> None:
    """Print the saga counts per status, the state audit and the timings."""
    from rich.table import Table
    from rich.text import Text

    from choreo.safety.terminal import data

    table = Table(title=f"{result.orders} orders: sagas per state", title_justify="left")
    table.add_column("State")
    table.add_column("Sagas", justify="right")
    table.add_column("Share", justify="right")
    styles = {"Completed": "green", "Failed": "yellow"}
    for status, count in result.counts.items():
        if count or status.value in styles:
            style = styles.get(status.value, "red")
            share = f"{100.0 * count / result.orders:.1f}%"
            table.add_row(Text(status.value, style), str(count), share)
    console.print(table)
    facts = result.audit.facts
    console.print(
        "services' own state: "
        f"{facts.get('charges', 0)} charges, {facts.get('refunds', 0)} refunds, "
        f"{facts.get('declined', 0)} declined, {facts.get('released', 0)} reservations "
        f"released, {facts.get('dispatched', 0)} dispatched, {facts.get('cancelled', 0)} "
        f"shipments cancelled, {facts.get('notifications', 0)} notifications"
    )
    console.print(
        f"{result.ended} sagas ended in {result.seconds:.2f} s "
        f"({result.sagas_per_second:.0f} sagas/s)"
    )
    if result.ok:
        console.print(Text("every saga ended; every failed one was fully undone", "green"))
    else:
        for problem in result.problems:
            console.print(Text.assemble(("problem: ", "red"), data(problem)))


@click.command("demo")
@click.option(
    "--orders", type=click.IntRange(min=1), default=300, show_default=True, help="Orders to place."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of orders and failures.")
@_share_option("--decline-rate", 0.2, "Share of payments declined.")
@_share_option("--dispatch-failure-rate", 0.05, "Share of shipment dispatches that fail.")
@_share_option(
    "--silent-rate",
    0.0,
    "Share of dispatches silently dropped: those sagas time out and compensate.",
)
@deadline_option("Seconds a saga may wait for its next event before it times out.", minimum=0.1)
@click.option(
    "--style",
    type=click.Choice(["choreographed", "orchestrated"]),
    default="choreographed",
    show_default=True,
    help="Run the saga by choreography, or with an orchestrator commanding the same services.",
)
@click.option("--no-ui", is_flag=True, help="Print the summary and exit (0 when all is well).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Viewer port (the next free one is taken when busy; 0 picks any).",
)
@kafka_options("Run on this Kafka cluster instead.")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Partitions of the topics created on Kafka.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for every saga to end.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the services' SQLite files here (default: a temporary directory).",
)
@schemas_option("The example's schema directory (default: the example's own schemas/).")
def demo(
    *,
    orders: int,
    seed: int,
    decline_rate: float,
    dispatch_failure_rate: float,
    silent_rate: float,
    deadline: float,
    style: str,
    no_ui: bool,
    port: int,
    bootstrap: str | None,
    transport_kind: str,
    partitions: int,
    timeout: float,
    data_dir: Path | None,
    schemas_dir: Path | None,
) -> None:
    """Run the order-fulfilment saga demo with the trace viewer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from choreo.app.example import import_demo
    from choreo.safety.terminal import console as safe_console

    console = safe_console()
    try:
        example = import_demo()  # the checkout's services/, or the wheel's copy
        bootstrap = bootstrap or configured_bootstrap()
        options = example.DemoOptions(
            orders=orders,
            seed=seed,
            decline_rate=decline_rate,
            dispatch_failure_rate=dispatch_failure_rate,
            transport=transport_kind if bootstrap else "memory",
            bootstrap=bootstrap,
            partitions=partitions,
            timeout=timeout,
            deadline=deadline,
            silent_rate=silent_rate,
            style=style,
            data_dir=data_dir,
            schemas_dir=schemas_dir,
            kafka_config=client_config(bootstrap) if bootstrap else None,
        )
    except ChoreoError as exc:
        raise click.UsageError(str(exc)) from exc
    if options.kafka_config is not None:
        from choreo.transports.probe import check_cluster

        try:
            check_cluster(transport_kind, options.kafka_config)
        except ChoreoError as exc:
            raise click.ClickException(str(exc)) from exc
    where = f"Kafka at {bootstrap} ({transport_kind})" if bootstrap else "the in-memory bus"
    who = "5 services" if style == "choreographed" else "an orchestrator and 5 services"
    console.print(
        f"choreo demo ({style}): {who} on {where}, {orders} orders "
        f"({decline_rate:.0%} declined, {dispatch_failure_rate:.0%} failed dispatches, seed {seed})"
    )
    with example.Demo(options) as run:
        try:
            run.start()
            columns = (
                TextColumn("{task.description}", style="progress.description"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console, transient=False) as bar:
                placed_task = bar.add_task("orders placed", total=orders)
                ended_task = bar.add_task("sagas ended ", total=orders)

                def progress(placed: int, ended: int, total: int) -> None:
                    bar.update(placed_task, completed=placed)
                    bar.update(ended_task, completed=ended)

                result = run.run(progress)
        except ChoreoError as exc:
            raise click.ClickException(str(exc)) from exc
        _summary(console, result)
        code = 0 if result.ok else 1
        if no_ui:
            sys.exit(code)
        server = _serve(run.tracker, port)
        try:
            console.print(
                Text.assemble("trace viewer on ", (server.url, "bold"), "  (Ctrl-C to stop)")
            )
            wait_for_interrupt()
        finally:
            server.stop()
    sys.exit(code)
