"""Shared fixtures: a real Kafka broker and a real PostgreSQL server for the session.

``kafka_bootstrap`` finds a broker in this order:

1. ``$CHOREO_KAFKA_BOOTSTRAP`` (an already running broker, e.g. the shared dev broker);
2. testcontainers' Kafka module, when a Docker engine answers a ping;
3. ``scripts/kafka_broker.py``: a local KRaft broker on free ports (needs Java 17+ and,
   once, Maven to fetch the jars).

``postgres_url`` finds a PostgreSQL server the same way: ``$CHOREO_POSTGRES_URL``, else
testcontainers' PostgreSQL module when a Docker engine answers, else
``scripts/postgres_server.py`` (the machine's PostgreSQL binaries in a temporary directory).

When none can be had the tests that need one are skipped with the reason, except under CI
(``$CI`` set), where they fail: CI never passes by skipping Kafka or PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI explores the same examples on every run, so a red build is reproducible and never a
# coin toss; local runs keep hypothesis' randomness (and its example database).
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "scripts" / "kafka_broker.py"
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "postgres_server.py"
_BROKER_NOTE = pytest.StashKey[str]()
_POSTGRES_NOTE = pytest.StashKey[str]()


def _load_script(name: str, path: Path) -> ModuleType:
    """Import the script at ``path`` as the module ``name`` (once) and return it."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_kafka_broker_module() -> ModuleType:
    """Import ``scripts/kafka_broker.py`` as the module ``kafka_broker`` (once) and return it."""
    return _load_script("kafka_broker", BROKER_SCRIPT)


def load_postgres_server_module() -> ModuleType:
    """Import ``scripts/postgres_server.py`` as ``postgres_server`` (once) and return it."""
    return _load_script("postgres_server", POSTGRES_SCRIPT)


def _docker_engine_answers() -> bool:
    """Return whether a Docker engine answers a ping within a couple of seconds."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _no_broker(reason: str, what: str = "Kafka broker") -> None:
    """Fail under CI, skip elsewhere: no Kafka broker (or PostgreSQL server) could be had."""
    if os.environ.get("CI"):
        pytest.fail(f"no {what} under CI: {reason}", pytrace=False)
    pytest.skip(f"no {what}: {reason}")


def _from_testcontainers(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start testcontainers' KRaft Kafka; return (bootstrap, note) and push its stop."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    started = time.monotonic()
    container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    try:
        container.start()
    except Exception:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    stack.append(container.stop)
    seconds = time.monotonic() - started
    return container.get_bootstrap_server(), f"started in {seconds:.1f} s (testcontainers)"


def _from_script(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start scripts/kafka_broker.py's broker on free ports; return (bootstrap, note)."""
    module = load_kafka_broker_module()
    broker = module.KafkaBroker(port=0)
    stack.append(broker.stop)
    broker.start()
    note = f"started in {broker.startup_seconds:.1f} s (scripts/kafka_broker.py)"
    return str(broker.bootstrap), note


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the ``host:port`` of a real Kafka broker that lives for the whole session."""
    configured = os.environ.get("CHOREO_KAFKA_BOOTSTRAP")
    if configured:
        request.config.stash[_BROKER_NOTE] = f"{configured} (CHOREO_KAFKA_BOOTSTRAP)"
        yield configured
        return

    stops: list[Callable[[], Any]] = []
    errors: list[str] = []
    bootstrap = ""
    note = ""
    try:
        if _docker_engine_answers():
            try:
                bootstrap, note = _from_testcontainers(stops)
            except Exception as error:
                errors.append(f"testcontainers: {error}")
        else:
            errors.append("testcontainers: no Docker engine answers")
        if not bootstrap:
            try:
                bootstrap, note = _from_script(stops)
            except Exception as error:
                errors.append(f"scripts/kafka_broker.py: {error}")
        if not bootstrap:
            _no_broker("; ".join(errors))
        request.config.stash[_BROKER_NOTE] = note
        yield bootstrap
    finally:
        for stop in reversed(stops):
            stop()


def _postgres_from_testcontainers(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start testcontainers' PostgreSQL; return (url, note) and push its stop."""
    from testcontainers.postgres import PostgresContainer

    started = time.monotonic()
    container = PostgresContainer("postgres:16-alpine", driver=None)
    try:
        container.start()
    except Exception:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    stack.append(container.stop)
    seconds = time.monotonic() - started
    return str(container.get_connection_url()), f"started in {seconds:.1f} s (testcontainers)"


def _postgres_from_script(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start scripts/postgres_server.py's server on a free port; return (url, note)."""
    module = load_postgres_server_module()
    server = module.PostgresServer(port=0)
    stack.append(server.stop)
    server.start()
    note = f"started in {server.startup_seconds:.1f} s (scripts/postgres_server.py)"
    return str(server.url), note


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of a real PostgreSQL server (database ``choreo``) for the whole session.

    Tests share the server: each uses its own names (``unique_name``) or its own schema.
    """
    configured = os.environ.get("CHOREO_POSTGRES_URL")
    if configured:
        request.config.stash[_POSTGRES_NOTE] = "CHOREO_POSTGRES_URL"
        yield configured
        return
    stops: list[Callable[[], Any]] = []
    errors: list[str] = []
    url = ""
    try:
        if _docker_engine_answers():
            try:
                url, note = _postgres_from_testcontainers(stops)
            except Exception as error:
                errors.append(f"testcontainers: {error}")
        else:
            errors.append("testcontainers: no Docker engine answers")
        if not url:
            try:
                url, note = _postgres_from_script(stops)
            except Exception as error:
                errors.append(f"scripts/postgres_server.py: {error}")
        if not url:
            _no_broker("; ".join(errors), "PostgreSQL server")
        request.config.stash[_POSTGRES_NOTE] = note
        yield url
    finally:
        for stop in reversed(stops):
            stop()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Return a factory of unique names: ``unique_name("orders")`` -> ``"orders-1a2b3c4d5e6f"``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Report where the session's broker and database came from and their start-up time."""
    note = config.stash.get(_BROKER_NOTE, None)
    if note is not None:
        terminalreporter.write_line(f"kafka broker: {note}")
    pg_note = config.stash.get(_POSTGRES_NOTE, None)
    if pg_note is not None:
        terminalreporter.write_line(f"postgresql: {pg_note}")
