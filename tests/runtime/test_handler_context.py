"""The handler's context builds its envelope, logger and savepoint only when used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from choreo.model.context import Context
from choreo.model.envelope import Envelope
from choreo.runtime import SqliteInbox
from choreo.runtime.handler_context import new_context, settle

from .fixtures.events import StockReserved


def _headers() -> dict[str, bytes]:
    return dict(Envelope.start("test.runtime.OrderPlaced", saga="S", service="x").to_headers())


def test_the_context_reads_like_a_plain_context(caplog: pytest.LogCaptureFixture) -> None:
    """envelope, correlation_id, log, emit and take_emitted behave as Context documents."""
    headers = _headers()
    ctx = new_context(headers, "inventory", 2, None, logging.getLogger("test.ctx"))
    assert isinstance(ctx, Context)
    assert ctx.envelope == Envelope.from_headers(headers)
    assert ctx.correlation_id == ctx.envelope.correlation_id
    assert (ctx.service, ctx.attempt, ctx.db) == ("inventory", 2, None)
    with caplog.at_level("INFO", logger="test.ctx"):
        ctx.log.info("hello")
    assert caplog.records[0].getMessage() == (
        f"[inventory test.runtime.OrderPlaced cid={ctx.correlation_id}] hello"
    )
    ctx.emit(StockReserved("o", "b", 1))
    assert ctx.take_emitted() == [StockReserved("o", "b", 1)]
    with pytest.raises(TypeError):
        ctx.emit("not an event")  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="set by the runtime"):
        ctx.db = object()


def test_a_savepoint_opens_only_when_the_handler_touches_the_database(tmp_path: Path) -> None:
    """Without ctx.db access nothing is sent to SQLite; with it, settle keeps or undoes writes."""
    inbox = SqliteInbox(tmp_path / "ctx.db")
    inbox.connection.execute("CREATE TABLE t (v TEXT)")
    inbox.begin()
    untouched = new_context(_headers(), "svc", 1, inbox, logging.getLogger("t"))
    settle(untouched, keep=False)
    assert not untouched._savepoint

    undone = new_context(_headers(), "svc", 1, inbox, logging.getLogger("t"))
    undone.db.execute("INSERT INTO t VALUES ('undone')")
    assert undone._savepoint
    settle(undone, keep=False)
    kept = new_context(_headers(), "svc", 1, inbox, logging.getLogger("t"))
    kept.db.execute("INSERT INTO t VALUES ('kept')")
    settle(kept, keep=True)
    inbox.commit()
    assert inbox.connection.execute("SELECT v FROM t").fetchall() == [("kept",)]
    inbox.close()
