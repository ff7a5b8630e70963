"""docker-compose.yml and the Dockerfile: validated by structure (no Docker engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHOP = ("order", "inventory", "payment", "shipping", "notification")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """Return docker-compose.yml parsed (YAML merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _local(args: list[str]) -> list[str]:
    """Return container arguments with the image's /app paths pointing at this checkout."""
    return [arg.replace("/app/", f"{REPO}/") for arg in args]


def _parse(command: click.Command, args: list[str]) -> dict[str, Any]:
    """Parse ``args`` with ``command``'s options (without running it) and return the params."""
    with command.make_context(command.name or "cmd", _local(args)) as ctx:
        return dict(ctx.params)


def test_every_service_is_built_commanded_and_waits_for_kafka(compose: dict[str, Any]) -> None:
    """Each container other than kafka has an image or build, a command and waits for kafka."""
    services = compose["services"]
    assert set(services) >= {"kafka", "postgres", *SHOP, "viewer", "orders"}
    for name, spec in services.items():
        assert "image" in spec or "build" in spec, name
        if name in ("kafka", "postgres"):
            assert "healthcheck" in spec
            continue
        if name in ("prometheus", "grafana"):  # tests/observability/test_deploy_config.py
            continue
        assert isinstance(spec["command"], list) and spec["command"], name
        assert spec["depends_on"]["kafka"] == {"condition": "service_healthy"}, name


def test_service_containers_run_their_service_on_the_internal_listener(
    compose: dict[str, Any],
) -> None:
    """Each shop container runs ``choreo run services.<name>:service`` with valid options."""
    from choreo.cli.run_cmd import load_service, run

    advertised = compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    internal = advertised.split("INTERNAL://", 1)[1].split(",", 1)[0]
    for name in SHOP:
        spec = compose["services"][name]
        command = spec["command"]
        assert command[0] == "choreo"
        run_at = command.index("run")
        params = _parse(run, command[run_at + 1 :])
        assert params["target"] == f"services.{name}:service"
        assert load_service(params["target"]).name == name
        assert params["kind"] == "confluent"
        assert params["bootstrap"] == internal
        assert params["inbox_path"] is None and params["store_url"] is None  # from the env
        assert _store_of(compose, name) == f"postgres:5432/shop?schema={name}"
        assert spec["depends_on"]["postgres"] == {"condition": "service_healthy"}
        # healthy = ready: migrated store, group joined, poll loop running (the /readyz probe)
        assert spec["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
        assert "http://127.0.0.1:9100/readyz" in spec["healthcheck"]["test"][3]
        assert spec["command"][spec["command"].index("--metrics-port") + 1] == "9100"
        assert spec["environment"]["SHOP_DECLINE_RATE"] == "0.2"


def test_viewer_serves_remotely_only_on_purpose(compose: dict[str, Any]) -> None:
    """The viewer follows kafka, binds 0.0.0.0 with --allow-remote, published on loopback."""
    from choreo.cli.ui_cmd import ui

    spec = compose["services"]["viewer"]
    assert spec["command"][:2] == ["choreo", "ui"]
    params = _parse(ui, spec["command"][2:])
    assert params["host"] == "0.0.0.0" and params["allow_remote"]
    assert params["bootstrap"] == "kafka:29092"
    assert spec["ports"] == [f"127.0.0.1:{params['port']}:{params['port']}"]
    assert "healthcheck" in spec


def _store_of(compose: dict[str, Any], name: str) -> str:
    """Return the host, database and schema of container ``name``'s PostgreSQL store."""
    url = compose["services"][name]["environment"]["CHOREO_STORE"]
    assert url.startswith("postgresql://")
    return str(url.rsplit("@", 1)[1])


def test_postgres_is_the_shared_store_of_every_service(compose: dict[str, Any]) -> None:
    """PostgreSQL has a health check and a volume; no service keeps state in a volume."""
    spec = compose["services"]["postgres"]
    assert spec["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(spec["healthcheck"]["test"])
    assert spec["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert set(compose["volumes"]) == {"postgres-data", "prometheus-data"}
    for name in SHOP:
        assert "volumes" not in compose["services"][name], name


def test_orders_wait_for_every_healthy_service_and_share_the_order_store(
    compose: dict[str, Any],
) -> None:
    """The one-shot order placer starts after all services are healthy, on the order store."""
    from services.placer import main

    spec = compose["services"]["orders"]
    for name in (*SHOP, "viewer", "kafka"):
        assert spec["depends_on"][name] == {"condition": "service_healthy"}, name
    assert spec["restart"] == "no"
    assert spec["command"][:3] == ["python", "-m", "services.placer"]
    params = _parse(main, spec["command"][3:])
    assert params["inbox"] is None
    assert _store_of(compose, "orders") == _store_of(compose, "order")


def test_dockerfile_installs_the_package_with_services_and_schemas() -> None:
    """The image is python:3.11-slim with choreo, the services and the schemas installed."""
    text = (REPO / "Dockerfile").read_text()
    assert "\nFROM python:3.11-slim\n" in text
    for line in ("COPY choreo choreo", "COPY services services", "COPY schemas schemas"):
        assert line in text
    assert "pip install ." in text
    assert "WORKDIR /app" in text


def _choreo_workers(compose: dict[str, Any]) -> list[str]:
    """Return the containers that run ``choreo run`` (the shop and the orchestrator)."""
    return [
        name
        for name, spec in compose["services"].items()
        if spec.get("command", [])[:1] == ["choreo"] and "run" in spec["command"]
    ]


def test_every_worker_creates_topics_a_scaled_out_service_can_share(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed under its container's environment, every ``choreo run`` gets its store and
    more than one partition per topic (`--scale payment=2` gives the second replica work),
    the same count as the topics the broker creates itself; and a replication the
    compose file's one broker can hold, the same as the broker's defaults."""
    from choreo.cli.run_cmd import load_service, run

    workers = _choreo_workers(compose)
    assert set(workers) == {*SHOP, "orchestrator"}
    broker_default = int(compose["services"]["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    assert broker_default > 1
    kafka = compose["services"]["kafka"]["environment"]
    brokers = len(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))  # combined nodes
    replication_default = int(kafka["KAFKA_DEFAULT_REPLICATION_FACTOR"])
    in_sync_default = int(kafka["KAFKA_MIN_INSYNC_REPLICAS"])
    for name in workers:
        spec = compose["services"][name]
        with monkeypatch.context() as env:
            for key, value in spec["environment"].items():
                env.setenv(key, str(value))
            params = _parse(run, spec["command"][spec["command"].index("run") + 1 :])
        assert load_service(params["target"]).name, name
        assert params["topic_partitions"] == broker_default, name
        assert params["topic_replication_factor"] == brokers == replication_default, name
        assert params["topic_min_insync_replicas"] == in_sync_default, name
        assert params["store_url"] == spec["environment"]["CHOREO_STORE"], name


def test_every_store_url_logs_in_as_the_postgres_service_and_its_schema_opens(
    compose: dict[str, Any], postgres_url: str
) -> None:
    """User, password, host, port and database of every CHOREO_STORE are the postgres
    container's; each schema name is one PostgreSQL accepts (``order`` is a keyword)."""
    from urllib.parse import parse_qs, urlsplit

    from choreo.store import open_store

    database = compose["services"]["postgres"]["environment"]
    schemas = set()
    for name, spec in compose["services"].items():
        url = spec.get("environment", {}).get("CHOREO_STORE")
        if url is None:
            continue
        parts = urlsplit(url)
        assert parts.scheme == "postgresql", name
        assert (parts.username, parts.password) == (
            database["POSTGRES_USER"],
            database["POSTGRES_PASSWORD"],
        ), name
        assert (parts.hostname, parts.port, parts.path) == (
            "postgres",
            5432,
            f"/{database['POSTGRES_DB']}",
        ), name
        schemas.update(parse_qs(parts.query)["schema"])
    assert schemas >= set(SHOP)
    for schema in sorted(schemas):
        separator = "&" if "?" in postgres_url else "?"
        store = open_store(f"{postgres_url}{separator}schema={schema}")
        store.close()
