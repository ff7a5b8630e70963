"""The real infrastructure of a chaos run: a Kafka broker (or a three-node cluster) and PostgreSQL.

The harness always owns its broker(s), since scenarios kill and restart them. PostgreSQL is
``$CHOREO_POSTGRES_URL`` when set, else a throwaway server from ``scripts/postgres_server.py``
(or none, when the services cannot use a shared store yet). Each scenario gets a database
of its own (:meth:`Infra.new_database`), so no scenario sees another's rows.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

logger = logging.getLogger("choreo.chaos")

SCRIPTS = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as the module ``name`` (once) and return it."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Kafka:
    """One broker, or a three-node cluster; either can lose a node and get it back."""

    def __init__(self, *, cluster: bool) -> None:
        self.cluster_mode = cluster
        self.broker: Any = None
        self.cluster: Any = None

    def start(self) -> float:
        """Start the broker or cluster and return its start-up seconds."""
        if self.cluster_mode:
            load_script("kafka_broker")
            self.cluster = load_script("kafka_cluster").KafkaCluster().start()
            return float(self.cluster.startup_seconds)
        self.broker = load_script("kafka_broker").KafkaBroker(port=0).start()
        return float(self.broker.startup_seconds)

    @property
    def bootstrap(self) -> str:
        """Return the bootstrap servers (every node of a cluster)."""
        return str(self.cluster.bootstrap if self.cluster is not None else self.broker.bootstrap)

    def stop(self, keep_logs_in: Path | None = None) -> None:
        """Stop every JVM and remove the data dirs (copying the brokers' logs first, if asked)."""
        if keep_logs_in is not None:
            nodes = [self.broker] if self.broker is not None else []
            nodes += list(self.cluster.nodes) if self.cluster is not None else []
            for n, node in enumerate(nodes):
                if node.log_file.is_file():
                    shutil.copy(node.log_file, keep_logs_in / f"broker-{n}-{time.time():.0f}.log")
        for part in (self.broker, self.cluster):
            if part is not None:
                part.stop()


class Postgres:
    """A PostgreSQL server to create one database per scenario in."""

    def __init__(self) -> None:
        self.server: Any = None
        self.url = os.environ.get("CHOREO_POSTGRES_URL", "")

    def start(self) -> float:
        """Start a throwaway server unless ``$CHOREO_POSTGRES_URL`` names one; return seconds."""
        if self.url:
            return 0.0
        self.server = load_script("postgres_server").PostgresServer().start()
        self.url = str(self.server.url)
        return float(self.server.startup_seconds)

    def new_database(self, label: str) -> str:
        """Create an empty database for one scenario and return its URL."""
        import psycopg

        name = f"chaos_{label.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name made above: letters, digits, _
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}"

    def stop(self) -> None:
        """Stop the server this harness started (a configured one is left alone)."""
        if self.server is not None:
            self.server.stop()
