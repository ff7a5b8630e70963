"""The Prometheus, Grafana and docker-compose files: they parse and agree with what choreo exports.

Docker cannot run here, so the files are checked by structure: YAML and JSON parse, every
scrape target is a compose service that serves ``--metrics-port`` on that port, and every
metric name (and label) the dashboard's queries use is one choreo exports, read from a real
scrape of workers and a tracker that handled the example shop's sagas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import click
import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from runtime.fixtures.events import OrderPlaced
from runtime.fixtures.serdes import avro_serde
from runtime.fixtures.shop import ShopState, build_shop

from choreo.choreography.graph import Choreography
from choreo.cli.run_cmd import run
from choreo.cli.ui_cmd import ui
from choreo.model.envelope import now_ms
from choreo.observability.health import Health
from choreo.observability.metrics import WORKER_METRICS, WorkerMetrics
from choreo.observability.middleware import HealthMiddleware
from choreo.observability.tracker_metrics import TRACKER_METRICS, TrackerMetrics
from choreo.runtime import Publisher
from choreo.tracker import Tracker
from services.saga import OrderFulfillment
from services.shop import Shop

from .shop import REPO, Cluster, Workers

DEPLOY = REPO / "deploy"
SHOP = ("order", "inventory", "payment", "shipping", "notification")
_NAME = re.compile(r"\bchoreo_[a-z0-9_]+\b")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def load_yaml(path: str) -> Any:
    """Return a YAML file of the repository, parsed."""
    return yaml.safe_load((REPO / path).read_text())


@pytest.fixture(scope="module")
def compose() -> Any:
    """Return docker-compose.yml parsed."""
    return load_yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def dashboard() -> Any:
    """Return the Grafana dashboard parsed."""
    return json.loads((DEPLOY / "grafana" / "dashboards" / "choreo.json").read_text())


@pytest.fixture
def exported(shop: Shop) -> Iterator[dict[str, set[str]]]:
    """Yield {sample name: label names} of a real scrape of workers and a tracker.

    The example shop handles 40 sagas; the runtime tests' shop, whose payment fails
    transiently, whose notifier is broken and which runs out of stock once, adds retries,
    business failures and dead letters to the same metrics.
    """
    registry = prometheus_client.CollectorRegistry()
    metrics = WorkerMetrics(registry, lag_interval=0.0)
    cluster = Cluster(shop, [metrics, HealthMiddleware(Health())])
    state = ShopState()
    state.flaky["payment.authorize"] = 1
    state.broken.add("notifier.tell")
    failing = build_shop(state)
    others = Workers(failing.services, avro_serde(), [metrics])
    publisher = Publisher(failing.orders, others.transport, avro_serde())
    try:
        publisher.start(failing.saga, OrderPlaced("o-1", "book", 1, 100))
        publisher.start(failing.saga, OrderPlaced("o-2", "book", 500, 100))  # out of stock
        others.run_until_idle()
        cluster.place(40, seed=9)
        cluster.run_until_idle()
        tracker = Tracker(
            choreography=Choreography.from_services(shop.services, [OrderFulfillment])
        )
        registry.register(TrackerMetrics(tracker))
        tracker.feed_many(cluster.records())
        tracker.check_deadlines(now_ms() + 3_600_000)
        text = prometheus_client.generate_latest(registry).decode()
    finally:
        publisher.close()
        others.close()
        cluster.close()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    yield names


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Return every PromQL expression of the dashboard (panels and template variables)."""
    found = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        found.append(variable["definition"])
    return found


def problems(expressions: list[str], exported: dict[str, set[str]]) -> list[str]:
    """Return what is wrong with ``expressions``: unknown metric names or labels."""
    found = []
    for expression in expressions:
        names = set(_NAME.findall(expression))
        if not names:
            found.append(f"no choreo metric in {expression!r}")
            continue
        unknown = names - set(exported)
        if unknown:
            found.append(f"unknown metric(s) {sorted(unknown)} in {expression!r}")
            continue
        labels = set.union(*(exported[name] for name in names)) | {"le"}
        used = {
            label.strip()
            for group in _BY.findall(expression)
            for label in group.split(",")
            if label.strip()
        }
        used |= {
            label
            for matchers in _MATCHERS.findall(expression)
            for label in _LABEL.findall(matchers)
        }
        if used - labels:
            found.append(f"unknown label(s) {sorted(used - labels)} in {expression!r}")
    return found


def test_every_dashboard_query_uses_only_exported_names_and_labels(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    """Each expression names choreo metrics that exist, grouped and filtered by their labels."""
    expressions = queries(dashboard)
    assert len(expressions) >= 15
    assert problems(expressions, exported) == []
    used = {name for expression in expressions for name in _NAME.findall(expression)}
    families = {name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
                for name in used}  # fmt: skip
    assert families >= set(WORKER_METRICS) | set(TRACKER_METRICS)  # every family is shown


def test_the_check_catches_a_wrong_name_or_label(exported: dict[str, set[str]]) -> None:
    """A misspelled metric or a label the metric lacks is reported."""
    assert problems(["rate(choreo_events_handeld_total[5m])"], exported)
    assert problems(['sum by (topic) (choreo_outbox_backlog{service="x"})'], exported)
    assert problems(['choreo_sagas{sevrice="x"}'], exported)
    assert problems(["up"], exported)
    assert not problems(['sum by (saga) (choreo_sagas{status="Stuck"})'], exported)


def test_the_dashboard_is_a_valid_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    """A uid, unique panel ids on a 24-column grid, the provisioned data source everywhere."""
    assert dashboard["uid"] == "choreo" and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    source = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")
    [datasource] = source["datasources"]
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"]


def _metrics_port(command: click.Command, args: list[str]) -> int:
    """Return the port of ``--metrics-port`` in ``args``, parsed by ``command`` itself."""
    local = [a.replace("/app/", f"{REPO}/") for a in args]
    with command.make_context(command.name or "cmd", local) as ctx:
        address = ctx.params["metrics_address"]
    assert address is not None, args
    return int(address[1])


def test_prometheus_scrapes_every_choreo_container_on_its_metrics_port(compose: Any) -> None:
    """Each scrape target is a compose service whose command serves /metrics on that port."""
    config = load_yaml("deploy/prometheus/prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
    services = compose["services"]
    expected = set()
    for name in (*SHOP, "orchestrator", "viewer"):
        command = services[name]["command"]
        if name == "viewer":
            port = _metrics_port(ui, command[2:])
        else:
            port = _metrics_port(run, command[command.index("run") + 1 :])
        expected.add(f"{name}:{port}")
    assert targets == expected


def test_compose_wires_prometheus_and_grafana(compose: Any) -> None:
    """Prometheus and Grafana mount the repository's files, on the host's loopback only."""
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"] if v.startswith("./")}
    assert mounts == {"./deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for volume in grafana["volumes"]:
        source = volume.split(":")[0]
        assert (REPO / source).exists(), volume
    provider = load_yaml("deploy/grafana/provisioning/dashboards/choreo.yml")
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert any(v.split(":")[1] == dashboards_dir for v in grafana["volumes"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/choreo.json"
    for spec in (prometheus, grafana):
        assert all(port.startswith("127.0.0.1:") for port in spec["ports"])


def test_shop_health_checks_ask_readyz(compose: Any) -> None:
    """The services' compose health checks GET /readyz on the metrics port."""
    for name in SHOP:
        spec = compose["services"][name]
        port = _metrics_port(run, spec["command"][spec["command"].index("run") + 1 :])
        test = " ".join(spec["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/readyz" in test


def test_the_operating_page_documents_every_exported_family() -> None:
    """docs/operating-observability.md has a table row for every metric family choreo exports."""
    text = (REPO / "docs" / "operating-observability.md").read_text()
    documented = set(re.findall(r"^\| `(choreo_[a-z0-9_]+)` \|", text, flags=re.MULTILINE))
    assert documented == set(WORKER_METRICS) | set(TRACKER_METRICS)
