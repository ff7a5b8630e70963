"""A ``choreo run`` worker on the real broker: /metrics scraped over HTTP, probes that flip."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime.fixtures.events import OrderPlaced
from runtime.fixtures.serdes import avro_serde
from runtime.fixtures.shop import SCHEMAS_DIR, build_shop

from choreo.runtime import Publisher, WorkerConfig
from choreo.transports.factory import open_transport

from .shop import REPO, Samples, samples, value

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = "tests.observability.app:stock"
T = "test.runtime."


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status(url: str) -> int | None:
    """Return the HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


class Worker:
    """A ``choreo run`` subprocess of the ``stock`` service with a metrics port."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.popen = subprocess.Popen(
            [
                sys.executable, "-m", "choreo", "--log-level", "INFO", "run", APP,
                "--transport", "confluent", "--bootstrap", bootstrap,
                "--schemas", str(SCHEMAS_DIR), "--inbox", str(tmp / "stock.db"),
                "--group", f"{prefix}stock", "--topic-prefix", prefix,
                "--metrics-port", f"127.0.0.1:{self.port}", *extra,
            ],
            cwd=REPO,
            env={**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    def scrape(self) -> Samples:
        """Return /metrics, parsed."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return samples(response.read().decode())

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Poll ``condition`` every 50 ms until it holds; fail with the output after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen; output:\n{''.join(self.lines)}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM the worker and return its exit code (SIGKILL after 30 s)."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


@pytest.fixture
def prefix() -> str:
    """Return a topic and group prefix of this test only."""
    return f"obs{uuid.uuid4().hex[:10]}."


@pytest.fixture
def orders(kafka_bootstrap: str, prefix: str) -> Iterator[Callable[[str, str, int], None]]:
    """Yield a function publishing one OrderPlaced (order id, sku, quantity) to the broker."""
    transport = open_transport("confluent", bootstrap=kafka_bootstrap)
    shop = build_shop()
    config = WorkerConfig(topic_naming=lambda t: f"{prefix}{t}")
    publisher = Publisher(shop.orders, transport, avro_serde(), config=config)

    def place(order_id: str, sku: str, quantity: int) -> None:
        publisher.start(shop.saga, OrderPlaced(order_id, sku, quantity, 100))

    yield place
    publisher.close()
    transport.close()  # type: ignore[attr-defined]


def test_metrics_are_scraped_by_name_and_value_and_readiness_follows_the_join(
    kafka_bootstrap: str, prefix: str, orders: Callable[[str, str, int], None], tmp_path: Path
) -> None:
    """/readyz goes 503 -> 200 as the worker joins; after N orders /metrics counts N."""
    count = 25
    for number in range(count):  # waiting before the worker starts: lag to catch up
        orders(f"o-{number}", "book", 1)
    worker = Worker(kafka_bootstrap, prefix, tmp_path)
    seen: list[int] = []
    try:

        def ready() -> bool:
            code = status(f"{worker.url}/readyz")
            if code is not None and (not seen or seen[-1] != code):
                seen.append(code)
            return code == 200

        worker.wait(ready, "/readyz 200")
        assert seen == [503, 200]  # answered before the group was joined, then ready
        assert status(f"{worker.url}/healthz") == 200
        handled = {"service": "stock", "event_type": T + "OrderPlaced"}
        lag = {"service": "stock", "topic": f"{prefix}{T}OrderPlaced", "partition": "0"}
        lags: list[float] = []

        def caught_up() -> bool:
            found = worker.scrape()
            key = ("choreo_consumer_lag", tuple(sorted(lag.items())))
            if key in found and (not lags or lags[-1] != found[key]):
                lags.append(found[key])
            return value(found, "choreo_events_handled_total", **handled) == count and (
                lags[-1:] == [0.0]
            )

        worker.wait(caught_up, f"{count} handled events and a lag of 0", timeout=60)
        assert lags == [count, 0.0]  # measured before the first batch, then after the commit
        found = worker.scrape()
        assert value(found, "choreo_handler_duration_seconds_count", **handled) == count
        assert value(found, "choreo_handler_duration_seconds_bucket", le="+Inf", **handled) == count
        assert value(found, "choreo_handler_duration_seconds_sum", **handled) > 0
        assert value(found, "choreo_events_failed_total", **handled) == 0
        assert value(found, "choreo_rebalances_total", service="stock", kind="assigned") >= 1
        assert value(found, "choreo_assigned_partitions", service="stock") == 1
        assert value(found, "choreo_outbox_backlog", service="stock") == 0
    finally:
        code = worker.stop()
    assert code == 0, "".join(worker.lines)


def test_liveness_fails_while_a_handler_blocks_and_recovers_after(
    kafka_bootstrap: str, prefix: str, orders: Callable[[str, str, int], None], tmp_path: Path
) -> None:
    """A handler blocked for 6 s with --stall-after 1.5 turns /healthz (and /readyz) to 503."""
    worker = Worker(kafka_bootstrap, prefix, tmp_path, "--stall-after", "1.5")
    try:
        worker.wait(lambda: status(f"{worker.url}/readyz") == 200, "/readyz 200")
        orders("o-stuck", "block", 6)
        worker.wait(lambda: status(f"{worker.url}/healthz") == 503, "/healthz 503", timeout=15)
        assert status(f"{worker.url}/readyz") == 503
        worker.wait(lambda: status(f"{worker.url}/healthz") == 200, "/healthz 200 again", 20)
        worker.wait(lambda: status(f"{worker.url}/readyz") == 200, "/readyz 200 again", 20)
        handled = {"service": "stock", "event_type": T + "OrderPlaced"}
        found = worker.scrape()
        assert value(found, "choreo_events_handled_total", **handled) == 1
        assert value(found, "choreo_handler_duration_seconds_sum", **handled) >= 6
    finally:
        code = worker.stop()
    assert code == 0, "".join(worker.lines)
