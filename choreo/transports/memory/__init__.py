"""An in-process transport that behaves like Kafka: the embedded default and the test double.

A :class:`MemoryBus` is one "cluster": topics with partitions, per-partition offsets,
consumer groups with committed offsets and rebalances, and transactions. Any number of
:class:`MemoryTransport` objects (one per service, say) share one bus; every method is
thread-safe and ``poll`` blocks on a condition variable until data or the timeout.

Kafka behaviours kept on purpose:

* topics are auto-created on publish with ``default_partitions`` (like
  ``auto.create.topics.enable``); names must be legal Kafka topic names;
* a non-null key goes to Kafka's murmur2 partition, so the partition *number* matches a
  real cluster with the same partition count; a null key is spread round robin;
* a group hands out partitions with the ``range`` (default) or ``roundrobin`` assignor;
  a join or leave triggers an eager rebalance: every member first gives up its
  partitions (``on_revoke``, called in its own ``poll``) and only when all have done so
  is the new assignment handed out (``on_assign``). A member that stops polling
  therefore holds the group, as on Kafka until ``max.poll.interval.ms``;
* regex subscriptions (``^...``) also pick up topics created later;
* records published in a transaction become visible (and its offsets committed) at
  commit, atomically; an abort drops them; a newer producer with the same
  transactional id fences the older one.

Differences: there is no retention, records published in a transaction get their
offsets at commit (so offsets never have gaps), and publishing is immediately visible
rather than after a network round trip.

Cost: a partition log keeps plain tuples (which the garbage collector soon stops
tracking) and a consumer builds :class:`~choreo.transports.base.Record` objects as it
polls, as a Kafka client does; a one-partition topic skips the key hash. Publishing is
about 0.7 µs a record, polling about 0.25 µs (see ``bench/bench_runtime.py``).
"""

from choreo.transports.memory.bus import MemoryBus
from choreo.transports.memory.clients import MemoryConsumer, MemoryProducer, MemoryTransport

__all__ = ["MemoryBus", "MemoryConsumer", "MemoryProducer", "MemoryTransport"]
