"""The viewer under slow and numerous clients, over real sockets, and odd correlation ids.

A slowloris client that trickles its headers is dropped after the request timeout;
idle kept-alive connections are dropped too; connections beyond the limit get a 503 at
once without a thread; a live stream frees its slot when its client goes; every
correlation id (``..``, ``/``, ``%``, spaces, non-ASCII) can be opened.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from choreo.model.envelope import Role
from choreo.tracker.tracker import Tracker
from choreo.viewer.web import Limits, ViewerServer

from .samples import SagaWriter, new_tracker

FAST = Limits(max_connections=8, max_streams=2, request_timeout=1.0, write_timeout=2.0)
ODD_IDS = ["..", "../..", "a/b", "a%2Fb", "100%", "with space", "x?y#z&w=1", "é/ü", ".", "%"]


@pytest.fixture
def odd_tracker() -> Tracker:
    """A tracker with one saga per odd correlation id."""
    tracker = new_tracker()
    for cid in ODD_IDS:
        writer = SagaWriter(cid)
        writer.emit("shop.orders.OrderPlaced", Role.START, "order", payload={"id": cid})
        tracker.feed_many(writer.records)
    return tracker


@pytest.fixture
def server(odd_tracker: Tracker) -> Iterator[ViewerServer]:
    """Serve ``odd_tracker`` with small limits."""
    viewer = ViewerServer(odd_tracker, port=0, limits=FAST).start()
    try:
        yield viewer
    finally:
        viewer.stop()


def connect(server: ViewerServer) -> socket.socket:
    """Open a raw TCP connection to the viewer."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.settimeout(5)
    return sock


def get(server: ViewerServer, path: str) -> tuple[int, bytes]:
    """Send one GET on a fresh connection; return the status and the body."""
    with connect(server) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Return True when the server closes ``sock`` within ``seconds`` (data before is read)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def test_slowloris_client_is_dropped(server: ViewerServer) -> None:
    """Headers trickled one byte at a time never finish: the connection is closed while
    the bytes still come (request_timeout 1 s counts from the connection, not from the
    last byte; a timeout a byte renewed would let the trickle go on for its 20 s)."""
    sock = connect(server)
    started = time.monotonic()
    request = f"GET / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nX-Slow: "
    dropped = False
    for char in request + "a" * 300:
        try:
            sock.sendall(char.encode())
        except (BrokenPipeError, ConnectionResetError):
            dropped = True
            break
        time.sleep(0.1)
        if time.monotonic() - started > 20:
            break
    sock.close()
    assert dropped  # mid-trickle: a send after the server's close fails
    assert get(server, "/api/summary")[0] == 200


def test_idle_kept_alive_connection_is_dropped(server: ViewerServer) -> None:
    """A connection that sends nothing (or nothing more) is closed after the timeout."""
    with connect(server) as silent:
        assert closed_within(silent, 30.0)  # request_timeout 1 s + the reaper's interval


def test_many_clients_do_not_exhaust_the_server(server: ViewerServer) -> None:
    """Beyond max_connections a client gets a quick 503; once they go, service resumes."""
    before = threading.active_count()
    idle = [connect(server) for _ in range(FAST.max_connections)]
    time.sleep(0.2)
    with connect(server) as extra:
        extra.sendall(f"GET / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode())
        answer = extra.recv(4096)
    assert answer.startswith(b"HTTP/1.1 503")
    flood = [connect(server) for _ in range(200)]  # each refused at once, no thread
    assert threading.active_count() <= before + FAST.max_connections + 2
    for sock in idle + flood:
        sock.close()
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline and status != 200:
        try:
            status = get(server, "/api/summary")[0]
        except OSError:
            status = 0
        if status != 200:
            time.sleep(0.1)
    assert status == 200


def open_stream(server: ViewerServer) -> tuple[socket.socket, bytes]:
    """Open the event stream; return the socket and the status line."""
    sock = connect(server)
    sock.sendall(
        f"GET /api/stream HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode()
    )
    return sock, sock.recv(4096).split(b"\r\n", 1)[0]


def test_a_stream_frees_its_slot_when_its_client_goes(server: ViewerServer) -> None:
    """With both stream slots taken a third is refused; closing one frees a slot quickly."""
    first, status1 = open_stream(server)
    second, status2 = open_stream(server)
    third, status3 = open_stream(server)
    assert (status1, status2) == (b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK")
    assert status3.startswith(b"HTTP/1.1 503")
    third.close()
    first.close()
    deadline = time.monotonic() + 30
    status = b""
    while time.monotonic() < deadline:
        again, status = open_stream(server)
        again.close()
        if status == b"HTTP/1.1 200 OK":
            break
        time.sleep(0.1)
    second.close()
    assert status == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("cid", ODD_IDS)
def test_every_correlation_id_can_be_opened(server: ViewerServer, cid: str) -> None:
    """/api/saga?id= and /api/payload reach sagas whose ids a path would mangle."""
    status, body = get(server, "/api/saga?" + urllib.parse.urlencode({"id": cid}))
    assert status == 200, body
    detail = json.loads(body)
    assert detail["correlation_id"] == cid
    event_id = detail["events"][0]["event_id"]
    query = urllib.parse.urlencode({"saga": cid, "event": event_id})
    status, body = get(server, f"/api/payload?{query}")
    assert status == 200 and json.loads(body)["payload"] == {"id": cid}


def test_missing_or_huge_ids_are_bad_requests(server: ViewerServer) -> None:
    """No id, or one longer than the limit, is a 400 naming the parameter."""
    assert get(server, "/api/saga")[0] == 400
    assert get(server, "/api/saga?id=" + "x" * 5000)[0] == 400
    assert get(server, "/api/saga?id=nope")[0] == 404
