"""A batch's COMMIT on the PostgreSQL store, sent without waiting and read back later.

:meth:`choreo.store.PostgresStore.commit_behind` sends a batch's last pipeline (its
outbox row, the deletion of acknowledged rows, ``COMMIT``) and a flush request, and
returns a :class:`SentCommit` at once: the server writes and fsyncs the batch while the
worker polls and handles the next one on the store's other connection. The answer is
read (:meth:`SentCommit.result`) before anything that depends on the batch having
committed: the next batch's first use of the database, its commit, and the
publication of this batch's records by the delivery strategy (which never publishes
a record before its COMMIT returned).
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["SentCommit"]


class SentCommit:
    """A COMMIT sent on ``conn`` inside the open ``pipeline``; :meth:`result` reads its answer.

    ``after_commit`` runs once the COMMIT succeeded (the store's outbox bookkeeping);
    ``release`` gets the connection back when the answer was read, whatever it was. The
    answer is read once: later calls return, or raise the same error. ``reported`` is
    set when the error was raised to the worker already (the delivery strategy then
    handles it without raising it again). ``lock`` (the store's, re-entrant) is held
    while the answer is read: a caller on another thread sharing the store waits for
    it instead of taking the COMMIT as answered before it is.
    """

    def __init__(
        self,
        conn: Any,
        pipeline: contextlib.ExitStack,
        after_commit: Callable[[], None],
        release: Callable[[Any], None],
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._conn = conn
        self._pipeline = pipeline
        self._after_commit = after_commit
        self._release = release
        self._lock = lock if lock is not None else threading.RLock()
        self._done = False
        self._error: BaseException | None = None
        self.reported = False

    @classmethod
    def answered(cls) -> SentCommit:
        """Return a SentCommit whose COMMIT was waited for already (nothing to read)."""
        sent = cls(None, contextlib.ExitStack(), lambda: None, lambda conn: None)
        sent._done = True
        return sent

    @property
    def connection(self) -> Any:
        """Return the connection the COMMIT was sent on."""
        return self._conn

    @property
    def read(self) -> bool:
        """True once the answer was read."""
        return self._done

    def ready(self) -> bool:
        """Return whether the answer was read or has started to arrive (never blocks)."""
        if self._done:
            return True
        try:
            readable, _, _ = select.select([self._conn.fileno()], [], [], 0)
        except (OSError, ValueError):  # the connection is closed: reading says why
            return True
        return bool(readable)

    def result(self) -> None:
        """Wait for the COMMIT's answer; raise the error it reports."""
        if not self._done:
            with self._lock:  # one reader: another thread waits for its answer
                if not self._done:
                    self._read()
        if self._error is not None:
            raise self._error

    def _read(self) -> None:
        """Read the answer (once), run the after-commit on success, give the connection back."""
        try:
            self._pipeline.close()  # sends the sync, reads every result, raises
        except BaseException as exc:
            self._error = exc
        else:
            self._after_commit()
        finally:
            self._done = True
            self._release(self._conn)
