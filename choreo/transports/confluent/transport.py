"""The confluent transport: clients for one Kafka cluster, and its admin calls (see
:mod:`choreo.transports.confluent`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from choreo.errors import ConfigurationError
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent.client import (
    _ADMIN_TIMEOUT,
    _create,
    _error_of,
    _transport_error,
)
from choreo.transports.confluent.consumer import ConfluentConsumer
from choreo.transports.confluent.producer import ConfluentProducer
from choreo.transports.existing_topics import check_existing, read_confluent
from choreo.transports.readiness import wait_until_online
from choreo.transports.replication import check_brokers, check_replication, replication_configs
from choreo.transports.shared import require_group_id

logger = logging.getLogger(__name__)

__all__ = ["ConfluentTransport"]

class ConfluentTransport:
    """The transport for one Kafka cluster through confluent-kafka."""

    name = "confluent"

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._admin: AdminClient | None = None

    def producer(self, *, transactional_id: str | None = None) -> ConfluentProducer:
        """Return a new idempotent producer (transactional when ``transactional_id`` is given)."""
        return ConfluentProducer(self.config, transactional_id)

    def consumer(
        self, group_id: str, *, from_beginning: bool = True, instance_id: str | None = None
    ) -> ConfluentConsumer:
        """Return a new consumer in ``group_id``; static (``group.instance.id``) with an id."""
        require_group_id(group_id)
        return ConfluentConsumer(
            self.config,
            group_id,
            from_beginning=from_beginning,
            instance_id=instance_id,
            admin=self._admin_client,
        )

    def _admin_client(self) -> AdminClient:
        """Return the admin client, created on first use."""
        if self._admin is None:
            self._admin = _create(AdminClient, self.config.common_settings(), "admin")
        return self._admin

    def create_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        Replication as :meth:`Transport.create_topics <choreo.transports.base.Transport.
        create_topics>` says: checked against the cluster's live brokers first.
        """
        if not topics:
            return
        check_replication(replication_factor, min_insync_replicas)
        self._check_brokers(topics, replication_factor, min_insync_replicas)
        configs = replication_configs(min_insync_replicas)
        factor = -1 if replication_factor is None else replication_factor
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=factor, config=configs)
            for name in topics
        ]
        futures = self._admin_client().create_topics(new, operation_timeout=_ADMIN_TIMEOUT)
        existing: list[str] = []
        for name, future in futures.items():
            try:
                future.result(timeout=_ADMIN_TIMEOUT)
            except ck.KafkaException as exc:
                err = _error_of(exc)
                if err is not None and err.code() == ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    existing.append(name)
                    continue
                if err is not None and err.code() == ck.KafkaError.INVALID_REPLICATION_FACTOR:
                    raise ConfigurationError(f"cannot create topic {name!r}: {err.str()}") from None
                raise _transport_error(exc, f"cannot create topic {name!r}") from exc
        self._wait_for_metadata(topics)
        self._check_existing(existing, replication_factor, min_insync_replicas)

    def _check_existing(
        self, topics: Sequence[str], replication_factor: int | None, min_insync: int | None
    ) -> None:
        """Warn about existing ``topics`` with less replication than asked (one line each)."""
        admin = self._admin_client()
        check_existing(
            lambda: read_confluent(admin, topics, _ADMIN_TIMEOUT),
            topics,
            replication_factor,
            min_insync,
        )

    def _check_brokers(
        self, topics: Sequence[str], replication_factor: int | None, min_insync: int | None
    ) -> None:
        """Refuse (ConfigurationError) a replication the live brokers cannot hold, when one
        of ``topics`` is to be created with it.

        With every topic there nothing is created and nothing is refused: a broker down
        (a rolling restart of the cluster) must not stop a replica's restart; the
        existing topics are compared with what was asked afterwards, as always.
        """
        if replication_factor is None and min_insync is None:
            return
        try:
            metadata = self._admin_client().list_topics(timeout=_ADMIN_TIMEOUT)
        except ck.KafkaException as exc:
            raise _transport_error(exc, "cannot read the cluster's brokers") from exc
        if all(topic in metadata.topics for topic in topics):
            return
        check_brokers(len(metadata.brokers), replication_factor, min_insync)

    def _wait_for_metadata(self, topics: Sequence[str]) -> None:
        """Wait until every partition of ``topics`` is online on its leader (or 30 s passed).

        Creation is asynchronous, and producing to a partition its leader does not serve
        yet can lose records without an error on brokers before Kafka 4.5 (see
        :mod:`choreo.transports.readiness`); topics still not online after the wait are
        named in a warning.
        """
        late = wait_until_online(self._admin_client(), topics, _ADMIN_TIMEOUT)
        if late:
            logger.warning(
                "topic(s) %s not online on their leaders within %.0f s: records produced "
                "to them now may be lost by a broker before Kafka 4.5 (KAFKA-15591)",
                ", ".join(late[:10]) + (f" and {len(late) - 10} more" if len(late) > 10 else ""),
                _ADMIN_TIMEOUT,
            )

    def list_topics(self) -> list[str]:
        """Return the names of the topics that exist (internal ``__`` topics excluded)."""
        try:
            metadata = self._admin_client().list_topics(timeout=_ADMIN_TIMEOUT)
        except ck.KafkaException as exc:
            raise _transport_error(exc, "cannot list topics") from exc
        return sorted(name for name in metadata.topics if not name.startswith("__"))

    def close(self) -> None:
        """Release the admin client (producers and consumers are closed by their owners)."""
        self._admin = None
