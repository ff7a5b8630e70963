"""The confluent transport's consumer (see :mod:`choreo.transports.confluent`)."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient

from choreo.errors import (
    CommitError,
    TransportError,
)
from choreo.transports.base import (
    RECORD_SHELL,
    Record,
    TopicPartition,
    make_record,
)
from choreo.transports.bounded import run_bounded
from choreo.transports.config import KafkaConfig
from choreo.transports.confluent.client import (
    _CLOSE_LIMIT,
    _CONSUMER_EXTRAS,
    _LATEST,
    _RAISED_CONSUMER_ERRORS,
    _VALUE_OF,
    _close_bounded,
    _create,
    _describe,
    _ends_of,
    _error_of,
    _fatal_text,
    _isolation_of,
    _to_offsets,
    _transport_error,
)
from choreo.transports.shared import ConsumerBase

logger = logging.getLogger(__name__)

__all__ = ["ConfluentConsumer"]

def _lacks_value(headers: list[tuple[str, bytes]]) -> bool:
    """Return whether any of ``headers`` (every header of a batch, in one list) has no value.

    Foreign producers may write a header with a null value (librdkafka gives ``None``).
    ``all()`` over every value of the batch is the cheap test (one pass at C level); only
    a falsy value, ``b""`` or ``None``, needs the exact one.
    """
    return not all(map(_VALUE_OF, headers)) and None in map(_VALUE_OF, headers)


def _fill_absent(record: Record) -> Record:
    """Return ``record``, or a copy whose headers without value have ``b""`` instead."""
    headers = record.headers
    if None not in map(_VALUE_OF, headers):
        return record
    filled = tuple((k, v if v is not None else b"") for k, v in headers)
    return make_record(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        filled,
        record.timestamp_ms,
    )


class ConfluentConsumer(ConsumerBase[ck.Consumer]):
    """A confluent-kafka consumer-group member; see the module docstring."""

    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        *,
        from_beginning: bool = True,
        instance_id: str | None = None,
        admin: Callable[[], AdminClient] | None = None,
    ) -> None:
        settings: dict[str, Any] = dict(_CONSUMER_EXTRAS)
        settings.update(
            config.consumer_settings(
                group_id, from_beginning=from_beginning, instance_id=instance_id
            )
        )
        super().__init__(_create(ck.Consumer, settings, "consumer"))
        self._cooperative = "cooperative" in str(settings.get("partition.assignment.strategy", ""))
        self._config = config
        self._group_id = group_id
        self._instance_id = instance_id
        self._pending_seeks: dict[TopicPartition, int] | None = None
        self._revoked_in_poll: set[TopicPartition] = set()
        self._admin = admin
        self._isolation = _isolation_of(settings)

    def _subscribe(self, client: ck.Consumer, topics: Sequence[str]) -> None:
        """Subscribe with callbacks that run on_assign/on_revoke and (un)assign."""
        try:
            client.subscribe(
                list(topics),
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
        except ck.KafkaException as exc:
            raise _transport_error(exc, "subscribe failed") from exc

    def _assigned(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        """Run the user's on_assign, then assign with any offsets it asked to seek to."""
        assigned = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._pending_seeks = {}
        try:
            if self._on_assign is not None:
                self._on_assign(assigned)
        finally:
            seeks, self._pending_seeks = self._pending_seeks, None
        for p in partitions:
            offset = seeks.get(TopicPartition(p.topic, p.partition))
            if offset is not None:
                p.offset = offset
        if self._cooperative:
            client.incremental_assign(partitions)
        else:
            client.assign(partitions)

    def _revoked(self, client: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        """Run the user's on_revoke for a non-empty revocation, then resume and unassign.

        A pause ends with the assignment (the transports' contract): librdkafka would keep
        it, and a partition assigned again later (a worker's backoff spanning a rebalance,
        e.g. after a broker restart) would stay paused for good, its records never read.
        """
        revoked = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._revoked_in_poll.update(revoked)
        try:
            if revoked and self._on_revoke is not None:
                self._on_revoke(revoked)
        finally:
            if partitions:
                try:
                    client.resume(partitions)
                except ck.KafkaException as exc:
                    logger.debug("resuming revoked partitions: %s", _describe(exc))
            if self._cooperative:
                client.incremental_unassign(partitions)
            else:
                client.unassign()

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout`` for the first.

        librdkafka's ``consume(n, timeout)`` waits until ``n`` messages are there *or* the
        timeout passed, so at low load every hop would wait the whole timeout. Instead take
        what is already fetched without waiting, and when nothing is, wait for one message
        with ``poll(timeout)`` and then take the rest of its batch without waiting.

        A rebalance served by that second ``consume`` may revoke the partition of the
        message the ``poll`` returned: that message is then dropped (its partition's new
        owner reads it), so no record of a revoked partition is ever returned. (Within
        one client call librdkafka itself discards messages fetched before a revocation.)
        """
        client = self._client()
        revoked = self._revoked_in_poll
        try:
            messages = client.consume(max_records, 0)
            if not messages and timeout > 0:
                first = client.poll(timeout)
                if first is not None:
                    revoked.clear()
                    rest = client.consume(max_records - 1, 0) if max_records > 1 else []
                    if revoked and (first.topic(), first.partition()) in revoked:
                        messages = rest
                    else:
                        messages = [first, *rest]
        except ck.KafkaException as exc:
            raise _transport_error(exc, "consume failed") from exc
        return self._records(messages)

    def _records(self, messages: list[ck.Message]) -> list[Record]:
        """Return the :class:`Record` of each message without error (see :func:`_fill_absent`).

        Each record is a ``RECORD_SHELL`` filled in place and made a ``Record`` (what
        :data:`~choreo.transports.base.make_record` builds, without a call per message);
        whether any header of the batch lacks a value is one C-level test over all of them.
        """
        shell_class = RECORD_SHELL
        if shell_class is None:  # pragma: no cover - Record's layout changed
            return self._records_by_constructor(messages)
        record_class = Record
        records: list[Record] = []
        append = records.append
        batch_headers: list[tuple[str, bytes]] = []  # every header of the batch
        keep = batch_headers.extend
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            raw = msg.headers()
            # A message without error always has a topic, partition and offset.
            shell = shell_class()
            shell.topic = msg.topic()  # type: ignore[assignment]
            shell.partition = msg.partition()  # type: ignore[assignment]
            shell.offset = msg.offset()  # type: ignore[assignment]
            shell.key = msg.key()
            shell.value = msg.value()
            if raw:
                shell.headers = tuple(raw)  # type: ignore[arg-type]  # a list of (str, bytes)
                keep(raw)  # type: ignore[arg-type]
            else:
                shell.headers = ()
            shell.timestamp_ms = msg.timestamp()[1]
            shell.__class__ = record_class  # type: ignore[assignment]
            append(shell)  # type: ignore[arg-type]
        if batch_headers and _lacks_value(batch_headers):
            return [_fill_absent(record) for record in records]
        return records

    def _records_by_constructor(self, messages: list[ck.Message]) -> list[Record]:
        """Return the records of ``messages`` built with ``make_record`` (the fallback)."""
        records: list[Record] = []  # pragma: no cover - only if Record's layout changed
        for msg in messages:  # pragma: no cover
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            raw: Any = msg.headers()
            record = make_record(
                msg.topic(),  # type: ignore[arg-type]
                msg.partition(),  # type: ignore[arg-type]
                msg.offset(),  # type: ignore[arg-type]
                msg.key(),
                msg.value(),
                tuple(raw) if raw else (),
                msg.timestamp()[1],
            )
            records.append(_fill_absent(record))
        return records  # pragma: no cover

    @staticmethod
    def _on_error(err: ck.KafkaError) -> None:
        """Skip end-of-partition events, raise lasting errors, log the transient rest."""
        code = err.code()
        if code == ck.KafkaError._PARTITION_EOF:
            return
        if err.fatal() or code in _RAISED_CONSUMER_ERRORS:
            raise TransportError(
                f"consumer error: {_fatal_text(err)}", retriable=False, fatal=True
            )
        logger.warning("consumer error %s: %s", err.name(), err.str())

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Synchronously commit offsets (each the next offset to read) for the group."""
        client = self._client()
        if not offsets:
            return
        try:
            result = client.commit(offsets=_to_offsets(offsets), asynchronous=False)
        except ck.KafkaException as exc:
            err = _error_of(exc)
            raise CommitError(
                f"commit failed: {_describe(exc)}", retriable=bool(err and err.retriable())
            ) from exc
        failed = [(p, p.error) for p in result or () if p.error is not None]
        if failed:
            first, error = failed[0]
            raise CommitError(
                f"commit failed for {len(failed)} partition(s); first {first.topic}"
                f"[{first.partition}]: {error.str()}",
                retriable=error.retriable(),
            )

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll of an assigned ``partition`` start at ``offset``."""
        client = self._client()
        if self._pending_seeks is not None:
            # Inside on_assign the partition is not assigned yet: assign at the offset.
            self._pending_seeks[partition] = offset
            return
        try:
            client.seek(ck.TopicPartition(partition.topic, partition.partition, offset))
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot seek {partition} to {offset}") from exc

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` until :meth:`resume`."""
        client = self._client()
        try:
            client.pause([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot pause {list(partitions)}") from exc

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        """Fetch from paused ``partitions`` again."""
        client = self._client()
        try:
            client.resume([ck.TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except ck.KafkaException as exc:
            raise _transport_error(exc, f"cannot resume {list(partitions)}") from exc

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions currently assigned to this consumer."""
        client = self._client()
        try:
            return [TopicPartition(p.topic, p.partition) for p in client.assignment()]
        except ck.KafkaException as exc:
            raise _transport_error(exc, "assignment failed") from exc

    def _leave_group(self) -> None:
        """Remove this static member from its group, so the others take its partitions now."""
        if self._instance_id is None:
            return
        try:  # the admin call that does it comes from kafka-python
            from choreo.transports.membership import remove_static_member
        except ImportError:
            logger.warning(
                "static member %s keeps its partitions until its session times out: removing "
                "it at once needs kafka-python (pip install 'choreo[kafka-python]')",
                self._instance_id,
            )
            return
        config, group, instance = self._config, self._group_id, self._instance_id
        if not run_bounded(
            lambda: remove_static_member(config, group, instance), "leave-group", _CLOSE_LIMIT
        ):
            logger.warning(
                "static member %s not removed from group %s within %.0f s: its partitions "
                "move after the session timeout",
                instance,
                group,
                _CLOSE_LIMIT,
            )

    def high_watermarks(
        self, partitions: Sequence[TopicPartition], timeout: float = 2.0
    ) -> dict[TopicPartition, int]:
        """Return the end of each partition, asked of the brokers in one bounded call.

        The end is the offset a ``read_committed`` consumer (choreo's default) stops
        before: the last stable offset, below the first record of a transaction still
        open, or the high watermark (the offset the next record will get) when none is;
        with ``isolation.level=read_uncommitted`` in the consumer settings, the high
        watermark. These are the ends librdkafka's per-partition watermark query gives
        this consumer. All partitions are asked together (the admin client's
        ``list_offsets``: one ListOffsets request per partition leader), the whole call
        bounded by ``timeout`` seconds however many partitions there are; a partition
        whose end is not known by then (or whose leader answered with an error) is left
        out. Used by catch-up reads (:mod:`choreo.transports.catchup`) and consumer lag
        (:mod:`choreo.observability.metrics`).
        """
        self._client()  # raises for a closed consumer, as the other calls do
        wanted = {ck.TopicPartition(tp.topic, tp.partition): _LATEST for tp in partitions}
        if not wanted:
            return {}
        try:
            futures = self._admin_client().list_offsets(
                wanted, isolation_level=self._isolation, request_timeout=max(timeout, 0.001)
            )
        except (ck.KafkaException, ValueError, TypeError) as exc:
            logger.debug("no end offsets: %s", _describe(exc))
            return {}
        concurrent.futures.wait(futures.values(), timeout=max(timeout, 0.0))
        return _ends_of(futures)

    def _admin_client(self) -> AdminClient:
        """Return the admin client the ends are asked with: the transport's, or one of its own."""
        if self._admin is None:
            admin = _create(AdminClient, self._config.common_settings(), "admin")
            self._admin = lambda: admin
        return self._admin()

    def positions(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Return the position (next offset to read) of each partition the client has one for.

        Used by catch-up reads (:mod:`choreo.transports.catchup`): a local call, no request.
        """
        wanted = [ck.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            found = self._client().position(wanted)
        except ck.KafkaException as exc:
            logger.debug("no positions: %s", _describe(exc))
            return {}
        return {TopicPartition(p.topic, p.partition): p.offset for p in found if p.offset >= 0}

    def _close_client(self) -> None:
        """Close the client (a dynamic member leaves the group), logging any error.

        Bounded: librdkafka's close can wait for good on a coordinator it cannot reach
        (after a broker restart); past ``_CLOSE_LIMIT`` the client is abandoned, so a
        worker that must stop (a fatal error) exits and its supervisor restarts it. The
        admin client the consumer created for its ends (when no transport lent it one)
        is dropped with it: it holds threads and a connection to every broker.
        """
        try:
            _close_bounded(
                self._consumer.close, "consumer", "its group coordinator", logging.WARNING
            )
        finally:
            self._admin = None  # an admin client of its own is released with the consumer
