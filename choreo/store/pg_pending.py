"""A batch's COMMIT sent to PostgreSQL whose answer is read later: the commit sent behind.

:meth:`choreo.store.PostgresStore.commit_behind` sends a batch's outbox row and its
``COMMIT`` and returns at once with a :class:`PendingCommit`. The worker polls, decodes
and handles the next batch meanwhile, whose inbox claim goes out on the same connection
behind that COMMIT: the server commits one batch and claims the next while the client
works, instead of the client waiting for each COMMIT. The answer is read, in order, before
anything else uses the connection (the next claim's answer, ``ctx.db``, a rollback, the
next commit, closing the store); :meth:`PendingCommit.result` reports it. Nothing of the
batch may be published before its result says it committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PendingCommit"]


class PendingCommit:
    """One batch's COMMIT: sent, and read (or failed) once :meth:`settle` ran.

    ``sent`` is the pipeline to read (a :class:`~choreo.store.pg_pipeline.SentStatements`),
    None for a batch committed already; ``after_commit`` runs with the statements' answers
    once they say the batch committed. ``on_failure`` runs once if it did not (or the
    answer was lost).
    """

    def __init__(
        self,
        sent: Any,
        after_commit: Callable[[list[Any]], None],
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self._sent = sent
        self._after_commit = after_commit
        self._on_failure = on_failure
        self._error: BaseException | None = None
        self._read = sent is None

    @classmethod
    def committed(cls) -> PendingCommit:
        """Return the result of a batch committed already (nothing left to read)."""
        return cls(None, lambda _: None, lambda _: None)

    @property
    def read(self) -> bool:
        """True once the answer was read (whatever it said)."""
        return self._read

    def settle(self, *, leave_pipeline: bool = True) -> None:
        """Read the answer (once); record a failure instead of raising it.

        ``leave_pipeline`` False: statements queued behind the COMMIT are still unread.
        """
        if self._read:
            return
        self._read = True
        try:
            answers = self._sent.read(leave_pipeline=leave_pipeline)
        except BaseException as exc:
            self._error = exc
            self._on_failure(exc)
            return
        self._after_commit(answers)

    def result(self) -> None:
        """Raise the COMMIT's failure (the batch was rolled back, or its answer lost).

        Only after :meth:`settle` ran (the store settles it before any other use of its
        connection; :meth:`choreo.store.PostgresStore.settle_behind` does it on demand).
        """
        if not self._read:
            raise RuntimeError("the COMMIT's answer was not read yet")
        if self._error is not None:
            raise self._error
