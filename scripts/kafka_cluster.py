#!/usr/bin/env python3
"""A three-node KRaft Kafka cluster on one machine for failover tests: kill a leader, restart it.

Stdlib only (plus confluent-kafka, when installed, to find partition leaders). Each node is a
:class:`kafka_broker.KafkaBroker` running a combined broker+controller on its own ports and
data dir; the three controllers form one quorum, every topic gets replication factor 3 and
``min.insync.replicas=2`` (``scripts/kafka/cluster.properties``). So one node may die at any
moment: an acknowledged (``acks=all``) record is on at least one surviving node, producers
keep writing, and the controller moves the dead node's partition leaderships to the others
within a few seconds (``broker.session.timeout.ms=6000``).

* ``python scripts/kafka_broker.py cluster`` runs one in the foreground (Ctrl-C stops it).
* ``KafkaCluster`` (a context manager) from Python: :meth:`KafkaCluster.leaders` names the
  leader of each partition, :meth:`KafkaCluster.kill_leader_of` SIGKILLs the node leading
  the given partitions, :meth:`KafkaCluster.restart` brings a node back on its data dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import string
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import ClassVar, Self

__all__ = ["ClusterNode", "KafkaCluster"]

logger = logging.getLogger("choreo.kafka_cluster")

SCRIPTS_DIR = Path(__file__).resolve().parent
CLUSTER_TEMPLATE = SCRIPTS_DIR / "kafka" / "cluster.properties"


def _load_broker_module() -> ModuleType:
    """Return the ``kafka_broker`` module (this directory's script), importing it once."""
    module = sys.modules.get("kafka_broker")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("kafka_broker", SCRIPTS_DIR / "kafka_broker.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load scripts/kafka_broker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kafka_broker"] = module
    spec.loader.exec_module(module)
    return module


kb = _load_broker_module()


class ClusterNode(kb.KafkaBroker):  # type: ignore[misc,name-defined]
    """One combined broker+controller of a :class:`KafkaCluster` (node ids start at 1)."""

    def __init__(self, node_id: int, *, jars: Path | None, startup_timeout: float) -> None:
        super().__init__(jars=jars, startup_timeout=startup_timeout)
        self.node_id = node_id
        self.voters = ""

    def server_properties(self) -> str:
        """Return this node's ``server.properties``: its id, ports and the shared voter list."""
        template = string.Template(CLUSTER_TEMPLATE.read_text())
        return template.substitute(
            node_id=self.node_id,
            voters=self.voters,
            broker_port=self.port,
            controller_port=self.controller_port,
            data_dir=str(self.workdir / "data"),
        )


class KafkaCluster:
    """Three KRaft nodes in temporary directories, one quorum, started and stopped by PID.

    After :meth:`start` returns every node serves metadata and :attr:`bootstrap` lists all
    three. Nodes are killed (SIGKILL) and restarted on their own data dir and ports, so a
    restarted node rejoins the cluster and catches up from the leaders.
    """

    kind: ClassVar[str] = "kafka cluster"
    error: ClassVar[type[Exception]] = kb.BrokerError

    def __init__(
        self, size: int = 3, *, jars: Path | None = None, startup_timeout: float = 90.0
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.jars = jars
        self.nodes = [
            ClusterNode(node_id, jars=jars, startup_timeout=startup_timeout)
            for node_id in range(1, size + 1)
        ]
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        """Return the comma-separated ``host:port`` of every node (running or not)."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def node(self, node_id: int) -> ClusterNode:
        """Return the node with id ``node_id``; raise KeyError for an unknown one."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def start(self) -> Self:
        """Format every node with one cluster id, start them all, wait until each serves."""
        jars = kb.fetch_jars(self.jars)
        java = kb.java_executable()
        started = time.monotonic()
        cluster_id = kb.random_cluster_id()
        try:
            taken: set[int] = set()
            for node in self.nodes:
                node._choose_ports()
                while {node.port, node.controller_port} & taken:
                    node._choose_ports()
                taken |= {node.port, node.controller_port}
            voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
            for node in self.nodes:
                node.voters = voters
                node.cluster_id = cluster_id
                node.requested_port = node.port
                node.requested_controller_port = node.controller_port
                node.prepare(java, jars)
            for node in self.nodes:  # a quorum needs a majority up before any node serves
                node.launch(java, jars)
            for node in self.nodes:
                node.wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("kafka cluster %s started in %.1f s", self.bootstrap, self.startup_seconds)
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove their directories. Idempotent.

        All nodes get SIGTERM at once: stopped one by one, the last would wait in vain for
        a controller quorum to acknowledge its controlled shutdown.
        """
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def is_running(self) -> bool:
        """Return whether any node is alive."""
        return any(node.is_running() for node in self.nodes)

    def logs(self, lines: int = 40) -> str:
        """Return the tails of every node's logs, for error messages."""
        return "".join(f"\n=== node {n.node_id}{n.logs(lines)}" for n in self.nodes if n.workdir)

    def leaders(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        """Return the leader node id of every partition of ``topics`` (-1: no leader now)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.live_bootstrap()})
        metadata = admin.list_topics(timeout=10)
        found: dict[tuple[str, int], int] = {}
        for topic in topics:
            described = metadata.topics.get(topic)
            if described is None:
                continue
            for partition, info in described.partitions.items():
                found[(topic, partition)] = int(info.leader)
        return found

    def live_bootstrap(self) -> str:
        """Return the ``host:port`` of the running nodes only."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.is_running())

    def leader_of(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Return the node that leads most of ``partitions``; raise KeyError when none has one."""
        wanted = list(partitions)
        leaders = self.leaders({topic for topic, _ in wanted})
        votes = Counter(leaders[p] for p in wanted if leaders.get(p, -1) >= 0)
        if not votes:
            raise KeyError(f"no leader known for {wanted}")
        return votes.most_common(1)[0][0]

    def kill_leader_of(self, partitions: Iterable[tuple[str, int]]) -> int:
        """SIGKILL the node that leads most of ``partitions`` and return its id."""
        node_id = self.leader_of(partitions)
        self.node(node_id).kill()
        return node_id

    def restart(self, node_id: int, timeout: float | None = None) -> float:
        """Start node ``node_id`` again on its data dir and ports; return the seconds it took."""
        seconds: float = self.node(node_id).restart(timeout)
        return seconds

    def wait_for_leaders(
        self, partitions: Iterable[tuple[str, int]], *, avoid: int, timeout: float = 60.0
    ) -> float:
        """Wait until every partition has a leader other than ``avoid``; return the seconds."""
        wanted = list(partitions)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(Exception):
                leaders = self.leaders({topic for topic, _ in wanted})
                if all(leaders.get(p, -1) not in (-1, avoid) for p in wanted):
                    return time.monotonic() - started
            time.sleep(0.2)
        raise kb.BrokerError(f"partitions still without a new leader after {timeout:.0f} s")

    def __enter__(self) -> Self:
        """Start the cluster (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the cluster (see :meth:`stop`)."""
        self.stop()


def run_foreground(jars: Path | None, timeout: float) -> int:
    """Run a cluster until Ctrl-C or SIGTERM (``kafka_broker.py cluster``); return the status."""
    cluster = KafkaCluster(jars=jars, startup_timeout=timeout)

    def ready() -> list[str]:
        pids = ", ".join(f"node {n.node_id} pid {n.pid}" for n in cluster.nodes)
        return [
            f"kafka {kb.KAFKA_VERSION} cluster ready: bootstrap {cluster.bootstrap} ({pids}, "
            f"started in {cluster.startup_seconds:.1f} s)"
        ]

    status: int = kb.run_foreground(cluster, ready)
    return status
