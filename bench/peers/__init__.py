"""Benchmarks against the peers: one order-fulfilment saga, nine implementations, one run.

See ``bench/README.md`` ("Peers: the order-fulfilment saga") and ``bench/run_peers.py``.
Modules: :mod:`~bench.peers.choreography` and :mod:`~bench.peers.shape` (what every
implementation shares), :mod:`~bench.peers.harness` (spec, context, injector, collector),
:mod:`~bench.peers.runner` (one measured run), :mod:`~bench.peers.procs` and
:mod:`~bench.peers.service` (one process per service), :mod:`~bench.peers.topics`,
:mod:`~bench.peers.report` (spreads, ratios, tables), and one module per implementation:
hand-written loops (``ceiling``, ``raw``), choreo (confluent-kafka, kafka-python,
PostgreSQL store), choreo orchestrated, FastStream (aiokafka), DBOS Transact.
"""
