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
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# No run holds an example to a time limit: a loaded machine (CI's shares 2 cores with
# brokers and browsers) makes an example outlast hypothesis' 200 ms deadline or its data
# generation look too slow, whether CI is set or not; a case that must be quick says so.
settings.register_profile(
    "choreo", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# CI explores the same examples on every run, so a red build is reproducible and never a
# coin toss; local runs keep hypothesis' randomness (and its example database).
settings.register_profile("ci", parent=settings.get_profile("choreo"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "choreo")

# A shell starts a background job (``cmd &``, nohup) with SIGINT ignored, and an ignored
# signal stays ignored in every child after exec: the CLI processes the tests stop with
# Ctrl-C would then never see it. Python's own handler makes the children start with the
# default disposition again, whatever started this session.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "scripts" / "kafka_broker.py"
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "postgres_server.py"
SERVER_PROCESS_SCRIPT = REPO_ROOT / "scripts" / "_server_process.py"
_BROKER_NOTE = pytest.StashKey[str]()
_POSTGRES_NOTE = pytest.StashKey[str]()
_STARTED_THREADS = pytest.StashKey[list[tuple[str, threading.Thread]]]()
_WORKER_SUMMARIES = pytest.StashKey[list[str]]()


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


def load_server_process_module() -> ModuleType:
    """Import ``scripts/_server_process.py`` (what both server scripts share), once."""
    return _load_script("_server_process", SERVER_PROCESS_SCRIPT)


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


def _start_container(container: Any, stack: list[Callable[[], Any]]) -> str:
    """Start a testcontainers container, push its stop on ``stack``; return the note."""
    started = time.monotonic()
    try:
        container.start()
    except Exception:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    stack.append(container.stop)
    return f"started in {time.monotonic() - started:.1f} s (testcontainers)"


def _from_testcontainers(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start testcontainers' KRaft Kafka; return (bootstrap, note) and push its stop."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    note = _start_container(container, stack)
    return container.get_bootstrap_server(), note


def _kill_throwaway_broker(broker: Any) -> None:
    """SIGKILL the session's broker when the tests are done, before its data dir is removed.

    Its clean shutdown closes and checkpoints every partition the session created, for a
    log nobody reads again: 34 s for a broker holding 2,000 partitions against 6 s for
    SIGKILL and the removal of its directory. The scripts' own stop (SIGTERM, then SIGKILL
    after a grace period) is tested in tests/scripts and tests/chaos, on servers of their
    own.
    """
    if broker.is_running():
        broker.kill()


def _quit_throwaway_postgres(server: Any) -> None:
    """Shut the session's PostgreSQL down at once (SIGQUIT) before its directory is removed.

    PostgreSQL's "immediate" shutdown: the postmaster ends its backends and exits without
    the shutdown checkpoint of the "fast" one (12 s for a server holding 900 tables,
    against 4 s), which nothing would read.
    """
    process = server.process
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        process.wait(60)


def _from_script(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start scripts/kafka_broker.py's broker on free ports; return (bootstrap, note)."""
    module = load_kafka_broker_module()
    broker = module.KafkaBroker(port=0)
    stack.append(broker.stop)  # runs second: removes the data dir
    stack.append(lambda: _kill_throwaway_broker(broker))  # runs first
    broker.start()
    note = f"started in {broker.startup_seconds:.1f} s (scripts/kafka_broker.py)"
    return str(broker.bootstrap), note


def _session_server(
    request: pytest.FixtureRequest,
    *,
    env: str,
    what: str,
    note_key: pytest.StashKey[str],
    from_testcontainers: Callable[[list[Callable[[], Any]]], tuple[str, str]],
    from_script: Callable[[list[Callable[[], Any]]], tuple[str, str]],
    script: str,
    show_configured: bool,
) -> Iterator[str]:
    """Yield the address of a real server: ``$env``, else testcontainers, else our script.

    Notes where it came from under ``note_key`` (the terminal summary prints it; a
    configured address only with ``show_configured``: a database URL may hold a password),
    stops whatever it started when the session ends, and skips (fails under CI) when none
    starts.
    """
    configured = os.environ.get(env)
    if configured:
        request.config.stash[note_key] = f"{configured} ({env})" if show_configured else env
        yield configured
        return
    stops: list[Callable[[], Any]] = []
    errors: list[str] = []
    address = ""
    note = ""
    try:
        if _docker_engine_answers():
            try:
                address, note = from_testcontainers(stops)
            except Exception as error:
                errors.append(f"testcontainers: {error}")
        else:
            errors.append("testcontainers: no Docker engine answers")
        if not address:
            try:
                address, note = from_script(stops)
            except Exception as error:
                errors.append(f"{script}: {error}")
        if not address:
            _no_broker("; ".join(errors), what)
        request.config.stash[note_key] = note
        yield address
    finally:
        for stop in reversed(stops):
            stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the ``host:port`` of a real Kafka broker that lives for the whole session."""
    yield from _session_server(
        request,
        env="CHOREO_KAFKA_BOOTSTRAP",
        what="Kafka broker",
        note_key=_BROKER_NOTE,
        from_testcontainers=_from_testcontainers,
        from_script=_from_script,
        script="scripts/kafka_broker.py",
        show_configured=True,
    )


def _postgres_from_testcontainers(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start testcontainers' PostgreSQL; return (url, note) and push its stop."""
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16-alpine", driver=None)
    note = _start_container(container, stack)
    return str(container.get_connection_url()), note


def _postgres_from_script(stack: list[Callable[[], Any]]) -> tuple[str, str]:
    """Start scripts/postgres_server.py's server on a free port; return (url, note)."""
    module = load_postgres_server_module()
    server = module.PostgresServer(port=0)
    stack.append(server.stop)  # runs second: removes the data dir
    stack.append(lambda: _quit_throwaway_postgres(server))  # runs first
    server.start()
    note = f"started in {server.startup_seconds:.1f} s (scripts/postgres_server.py)"
    return str(server.url), note


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the URL of a real PostgreSQL server (database ``choreo``) for the whole session.

    Tests share the server: each uses its own names (``unique_name``) or its own schema.
    """
    yield from _session_server(
        request,
        env="CHOREO_POSTGRES_URL",
        what="PostgreSQL server",
        note_key=_POSTGRES_NOTE,
        from_testcontainers=_postgres_from_testcontainers,
        from_script=_postgres_from_script,
        script="scripts/postgres_server.py",
        show_configured=False,
    )


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Return a factory of unique names: ``unique_name("orders")`` -> ``"orders-1a2b3c4d5e6f"``."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


def _watched(thread: threading.Thread) -> bool:
    """Return whether ``thread`` is one a test must not leave running: a client's or ours."""
    return not thread.daemon or thread.name.startswith(("kafka-io", "choreo-"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Note the client and choreo threads a test started and left running at its end.

    Only noted (two thread listings per test, no wait): the summary names those still
    alive when the session ends, the leaked ones, with the test that started them.
    """
    before = set(threading.enumerate())
    yield
    started = item.config.stash.setdefault(_STARTED_THREADS, [])
    started.extend(
        (item.nodeid, t) for t in threading.enumerate() if t not in before and _watched(t)
    )


def _summary_lines(config: pytest.Config) -> list[str]:
    """Return this process's report: leaked threads, where the broker and database came from."""
    lines: list[str] = []
    leaked = [(test, t.name) for test, t in config.stash.get(_STARTED_THREADS, []) if t.is_alive()]
    if leaked:
        lines.append(
            f"threads left running by tests (a client or worker not closed): {len(leaked)}"
        )
        lines.extend(f"  {test}: {name}" for test, name in leaked[:20])
    note = config.stash.get(_BROKER_NOTE, None)
    if note is not None:
        lines.append(f"kafka broker: {note}")
    pg_note = config.stash.get(_POSTGRES_NOTE, None)
    if pg_note is not None:
        lines.append(f"postgresql: {pg_note}")
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker, hand this worker's report to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["choreo_summary"] = _summary_lines(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the pytest-xdist controller, keep each worker's report for the summary."""
    lines = getattr(node, "workeroutput", {}).get("choreo_summary", [])
    worker = getattr(node, "gateway", None)
    name = getattr(worker, "id", "worker")
    node.config.stash.setdefault(_WORKER_SUMMARIES, []).extend(f"[{name}] {x}" for x in lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Report where the session's broker and database came from, and leaked threads (each
    worker's, under pytest-xdist)."""
    for line in config.stash.get(_WORKER_SUMMARIES, []) + _summary_lines(config):
        terminalreporter.write_line(line)
