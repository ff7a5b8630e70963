"""Closing a kafka-python client logs no traceback: its close race is one DEBUG line.

kafka-python 3's network thread waits until a broker socket is readable, then receives;
a close from the caller's thread in between drops the socket, and kafka-python logs
``'NoneType' object has no attribute 'recv'`` at ERROR with a traceback
(:mod:`choreo.transports.kafka_python_logs`). The race depends on thread timing, so the
tests take kafka-python's own transport through the same two steps in order, on one
thread: ``close()`` (what the client's close does) and then ``_sock_recv()`` (what the
network thread does next). That is the exact code path of the race, made deterministic.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from kafka.net.selector import NetworkSelector
from kafka.net.transport import KafkaTCPTransport

import choreo.transports.kafka_python  # noqa: F401 - importing the transport installs the filter
from choreo.transports.kafka_python_logs import CLOSE_RACE_MESSAGE, TRANSPORT_LOGGER


@pytest.fixture
def transport() -> Iterator[tuple[KafkaTCPTransport, socket.socket]]:
    """Return kafka-python's transport over one end of a socket pair, and the other end."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    net = NetworkSelector()
    try:
        yield KafkaTCPTransport(net, ours), peer
    finally:
        peer.close()
        ours.close()
        net.close()


def _kafka_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TRANSPORT_LOGGER and r.levelno > logging.INFO]


def test_a_read_after_the_close_is_one_debug_line_without_traceback(
    transport: tuple[KafkaTCPTransport, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """The close race: no WARNING or ERROR, no traceback, one DEBUG line naming the race."""
    client, _ = transport
    caplog.set_level(logging.DEBUG, logger=TRANSPORT_LOGGER)
    client.close()  # the caller's thread: the client's close drops the socket
    data, error = client._sock_recv()  # the network thread, already past its wait for data
    assert data == b""
    assert "'recv'" in str(error)  # kafka-python still drops the connection as before
    lines = _kafka_lines(caplog)
    assert lines == [], [r.getMessage() for r in lines]
    demoted = [r for r in caplog.records if r.msg == CLOSE_RACE_MESSAGE]
    assert len(demoted) == 1
    assert demoted[0].levelno == logging.DEBUG
    assert demoted[0].exc_info is None and demoted[0].exc_text is None
    assert "(closed)" in demoted[0].getMessage()


def test_the_demoted_line_is_not_shown_where_debug_is_off(
    transport: tuple[KafkaTCPTransport, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """A logger at INFO (the handler at any level) shows nothing of the race."""
    client, _ = transport
    caplog.set_level(logging.INFO, logger=TRANSPORT_LOGGER)
    client.close()
    client._sock_recv()
    assert _kafka_lines(caplog) == []
    assert [r for r in caplog.records if r.msg == CLOSE_RACE_MESSAGE] == []
    assert all(r.exc_info is None for r in caplog.records)


def test_a_real_receive_error_on_an_open_connection_is_still_an_error(
    transport: tuple[KafkaTCPTransport, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """A socket that fails under an open transport keeps kafka-python's ERROR and traceback."""
    client, _ = transport
    caplog.set_level(logging.DEBUG, logger=TRANSPORT_LOGGER)
    client._sock.close()  # the socket fails, the transport was not closed by anyone
    _, error = client._sock_recv()
    assert error is not None
    errors = [r for r in _kafka_lines(caplog) if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Error receiving network data" in errors[0].getMessage()
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], OSError)


def test_the_peer_closing_the_connection_is_still_reported(
    transport: tuple[KafkaTCPTransport, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that hangs up is kafka-python's 'socket disconnected' ERROR, unchanged."""
    client, peer = transport
    caplog.set_level(logging.DEBUG, logger=TRANSPORT_LOGGER)
    peer.close()
    _, error = client._sock_recv()
    assert "socket disconnected" in str(error)
    assert [r.getMessage() for r in _kafka_lines(caplog)] == [
        f"{client}: socket disconnected"
    ]


def test_the_race_is_recognised_after_choreo_redacted_the_record(
    transport: tuple[KafkaTCPTransport, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """The CLI redacts kafka-python's records as they are made: still one DEBUG line."""
    from choreo.safety.redact import install_log_redaction

    install_log_redaction()  # as ``choreo`` and every Kafka config do
    client, _ = transport
    caplog.set_level(logging.DEBUG, logger=TRANSPORT_LOGGER)
    client.close()
    client._sock_recv()
    assert _kafka_lines(caplog) == []
    demoted = [r for r in caplog.records if r.msg == CLOSE_RACE_MESSAGE]
    assert len(demoted) == 1 and demoted[0].exc_text is None
    assert "(closed)>: connection closed by the client" in demoted[0].getMessage()
