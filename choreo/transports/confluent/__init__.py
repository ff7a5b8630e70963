"""The confluent-kafka (librdkafka) transport: the fast default for a real Kafka cluster.

Producers are idempotent with ``acks=all`` (see :mod:`choreo.transports.config`) and
use the ``murmur2_random`` partitioner so keys land where the Java client and
kafka-python put them. Delivery failures arrive through a delivery callback that only
fires on errors (``delivery.report.only.error``); :meth:`ConfluentProducer.flush`
raises them as one :class:`~choreo.errors.DeliveryError`. Consumers never auto-commit,
read committed records only, fetch in batches with ``consume()`` and commit
synchronously with explicit offsets. Rebalances use the eager ``range,roundrobin``
protocol by default; ``partition.assignment.strategy=cooperative-sticky`` in the
consumer settings selects the incremental (cooperative) protocol, where a rebalance
revokes only the partitions that move. Callbacks run in the thread that calls ``poll``
(or ``close``); a poll never returns a record of a partition revoked during it. A consumer
created with an ``instance_id`` is a static member (``group.instance.id``): librdkafka
does not send LeaveGroup when it closes, so its replacement gets the same partitions.

Every confluent-kafka exception is translated into :mod:`choreo.errors` here.

The package is the only place that imports confluent-kafka: :mod:`.producer`,
:mod:`.consumer` and :mod:`.transport` hold one class each, :mod:`.client` what they
share (the exceptions' translation, bounded creation and close, settings and limits);
the behaviour shared with the other transports is in :mod:`choreo.transports.shared`.
"""

from __future__ import annotations

from choreo.transports.confluent.consumer import ConfluentConsumer
from choreo.transports.confluent.producer import ConfluentProducer
from choreo.transports.confluent.transport import ConfluentTransport

__all__ = ["ConfluentConsumer", "ConfluentProducer", "ConfluentTransport"]
