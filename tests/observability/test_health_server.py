"""Health answers and the metrics port's HTTP routes, over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest

from choreo.observability.health import Health
from choreo.observability.server import ObservabilityServer, parse_address
from choreo.transports.base import TopicPartition

TP0 = TopicPartition("shop.orders.OrderCreated", 0)
TP1 = TopicPartition("shop.orders.OrderCreated", 1)


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(url: str) -> tuple[int, bytes, str]:
    """Return status, body and content type of a GET (4xx/5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def test_liveness_follows_the_poll_loop() -> None:
    """Live while starting and while polls come; not live once polls stop for too long."""
    clock = Clock()
    health = Health(stall_after=10, clock=clock)
    assert health.liveness().ok  # the process is up, the worker not started yet
    health.started()
    clock.now += 9
    assert health.liveness().ok  # started, no poll yet, within the threshold
    clock.now += 2
    probe = health.liveness()
    assert not probe.ok and probe.detail["seconds_since_poll"] == 11
    health.polled()
    assert health.liveness().ok
    clock.now += 10.5
    assert not health.liveness().ok


def test_finished_events_count_as_progress_between_polls() -> None:
    """A long batch whose events keep finishing stays live; once they stop, it is not."""
    clock = Clock()
    health = Health(stall_after=10, clock=clock)
    health.started()
    health.polled()
    for _ in range(3):  # a batch of slow handlers: no poll for 24 s, events finishing
        clock.now += 8
        health.progress += 1
        assert health.liveness().ok
    clock.now += 10.5  # the next handler blocks
    assert not health.liveness().ok


def test_readiness_needs_a_joined_group_and_a_live_loop() -> None:
    """Ready once an assignment came (even an empty one), not after revoking everything."""
    clock = Clock()
    health = Health(stall_after=5, clock=clock)
    health.started()
    assert not health.readiness().ok  # not in the group yet
    health.assigned([TP0, TP1])
    probe = health.readiness()
    assert probe.ok and probe.detail["partitions"] == 2
    health.revoked([TP0])
    assert health.readiness().ok  # still owns TP1
    health.revoked([TP1])
    assert not health.readiness().detail["joined"]
    health.assigned([])  # more replicas than partitions: in the group, idle
    assert health.readiness().ok
    clock.now += 6  # the loop stalled: not live, so not ready
    assert not health.readiness().ok
    health.polled()
    assert health.readiness().ok
    health.stopped()
    assert not health.readiness().ok


@pytest.fixture
def served() -> Iterator[tuple[ObservabilityServer, Health, Clock]]:
    """Return a running server with a registry holding one counter, and its health."""
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("choreo_test_things", "Things.", registry=registry)
    counter.inc(3)
    clock = Clock()
    health = Health(stall_after=5, clock=clock)
    with ObservabilityServer(host="127.0.0.1", port=0, registry=registry, health=health) as server:
        yield server, health, clock


def test_metrics_are_served_in_the_text_format(
    served: tuple[ObservabilityServer, Health, Clock],
) -> None:
    """GET /metrics returns the registry in Prometheus' text format."""
    server, _, _ = served
    status, body, content_type = get(f"{server.url}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert "choreo_test_things_total 3.0" in body.decode()


def test_openmetrics_is_served_when_asked_for(
    served: tuple[ObservabilityServer, Health, Clock],
) -> None:
    """A scraper asking for OpenMetrics gets it (with its EOF marker)."""
    server, _, _ = served
    request = urllib.request.Request(
        f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_probes_flip_with_the_health(served: tuple[ObservabilityServer, Health, Clock]) -> None:
    """/healthz and /readyz answer 200 or 503 with the facts as JSON."""
    server, health, clock = served
    health.started()
    status, body, content_type = get(f"{server.url}/readyz")
    assert (status, json.loads(body)["joined"]) == (503, False)
    assert content_type == "application/json"
    health.assigned([TP0])
    health.polled()
    status, body, _ = get(f"{server.url}/readyz")
    assert status == 200 and json.loads(body)["assigned"] == ["shop.orders.OrderCreated[0]"]
    assert get(f"{server.url}/healthz")[0] == 200
    clock.now += 6
    assert get(f"{server.url}/healthz")[0] == 503
    assert get(f"{server.url}/readyz")[0] == 503


def test_other_paths_are_not_found(served: tuple[ObservabilityServer, Health, Clock]) -> None:
    """Paths other than the three answer 404; a server without health has no probes."""
    server, _, _ = served
    assert get(f"{server.url}/")[0] == 404
    assert get(f"{server.url}/metrics/../etc/passwd")[0] == 404
    with ObservabilityServer(port=0) as bare:
        assert get(f"{bare.url}/healthz")[0] == 404
        assert get(f"{bare.url}/metrics")[0] == 404


def test_stop_releases_the_port() -> None:
    """After stop() the same port can be bound again."""
    first = ObservabilityServer(port=0).start()
    port = first.port
    first.stop()
    second = ObservabilityServer(port=port).start()
    assert second.port == port
    second.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("0.0.0.0", 9100)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:0", ("::1", 0)),
        (":9100", ("0.0.0.0", 9100)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    """PORT, HOST:PORT and [IPv6]:PORT are understood."""
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "http", "host:", "1:99999", "-1"])
def test_parse_address_rejects_garbage(text: str) -> None:
    """Anything else is a ValueError."""
    with pytest.raises(ValueError, match="PORT"):
        parse_address(text)
