"""Benchmarks against the peers: one order-fulfilment saga, five implementations, one run.

See ``bench/README.md`` ("Peers: the order-fulfilment saga") and ``bench/run_peers.py``.
Modules: :mod:`~bench.peers.choreography` (what every implementation shares),
:mod:`~bench.peers.harness` (one measured run in one process), and one module per
implementation: raw confluent-kafka, choreo (confluent-kafka and kafka-python transports),
FastStream (aiokafka), DBOS Transact (SQLite).
"""
