"""What one batch transaction of the PostgreSQL store staged, written when it commits.

A batch claims ids in the inbox (:mod:`choreo.store.pg_claim`), records the ids it
handled, stages the records it will publish and the ids the broker acknowledged since
the last batch. :class:`StagedBatch` keeps those and turns them into the commit's
statements: for choreo's own pipeline (:meth:`StagedBatch.statements`) or, in the rarer
cases, through psycopg (:meth:`StagedBatch.write`). The deletion of acknowledged rows
can go out earlier, with the claim (:meth:`StagedBatch.take_deletion`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from choreo.store.outbox import OutboxRecord
from choreo.store.pg_inbox import ADD_KEYS, UNCLAIM, inbox_keys, inbox_statement
from choreo.store.pg_outbox import BatchOutbox
from choreo.store.pg_pipeline import Statement

__all__ = ["StagedBatch"]


class StagedBatch:
    """One batch transaction's staged inbox and outbox work (a new one per transaction)."""

    def __init__(self) -> None:
        self.claimed: list[tuple[str, set[str]]] = []  # (consumer, ids it claimed)
        self.added: list[tuple[str, Sequence[str], int]] = []  # (consumer, ids, handled at)
        self.outbox: list[tuple[str, Sequence[OutboxRecord]]] = []  # (origin, records)
        self.sent: list[str] = []  # ids the broker acknowledged, rows not yet deleted
        self.deleted: list[int] = []  # outbox rows whose deletion went out with the claim

    def take_deletion(self, outbox: BatchOutbox) -> list[Statement]:
        """Return the deletion of the rows acknowledged so far, to send ahead of the commit.

        Those rows are then forgotten by the commit's after-commit. Nothing when the
        acknowledgements need :meth:`write`'s rarer path.
        """
        if not self.sent:
            return []
        planned = outbox.deletion(self.sent)
        if planned is None:
            return []
        statements, done = planned
        self.deleted.extend(done)
        self.sent = []
        return statements

    def statements(
        self, outbox: BatchOutbox, created_ms: int
    ) -> tuple[list[Statement], Callable[[Sequence[Any]], None]] | None:
        """Return the commit's statements (COMMIT not included) and their after-commit.

        The after-commit takes the statements' answers, in order (any after them, the
        COMMIT's, are ignored). None when the acknowledgements need :meth:`write` instead.
        """
        planned = outbox.statements(self.outbox, self.sent, created_ms, self.deleted)
        if planned is None:
            return None
        rows, after_rows = planned
        inbox = [inbox_statement(query, params) for query, params in self._inbox_writes()]
        first, end = len(inbox), len(inbox) + len(rows)
        return [*inbox, *rows], lambda answers: after_rows(answers[first:end])

    def write(self, conn: Any, outbox: BatchOutbox, created_ms: int) -> Callable[[], None]:
        """Execute the commit's statements in the caller's psycopg pipeline; return the
        after-commit."""
        for query, params in self._inbox_writes():
            conn.execute(query, params)
        return outbox.write(conn, self.outbox, self.sent, created_ms, self.deleted)

    def _inbox_writes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Return the inbox statements the commit needs, with psycopg parameters (usually none).

        Ids claimed but not handled (the worker stopped mid-batch) are released; ids
        added without being claimed first are inserted.
        """
        added: dict[str, set[str]] = {}
        for consumer, handled, _ in self.added:
            added.setdefault(consumer, set()).update(handled)
        claimed: dict[str, set[str]] = {}
        for consumer, ids in self.claimed:
            claimed.setdefault(consumer, set()).update(ids)
        writes: list[tuple[str, tuple[Any, ...]]] = []
        for consumer, taken in claimed.items():
            unhandled = taken - added.get(consumer, set())
            if unhandled:
                writes.append((UNCLAIM, (inbox_keys(consumer, list(unhandled)),)))
        for consumer, handled, at in self.added:
            rest = set(handled) - claimed.get(consumer, set())
            if rest:
                writes.append((ADD_KEYS, (consumer, at, inbox_keys(consumer, list(rest)))))
        return writes
