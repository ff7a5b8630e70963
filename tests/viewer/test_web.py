"""HTTP-level tests of the viewer: JSON shapes, filters, security headers, Host check, SSE."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from choreo.choreography.graph import Choreography
from choreo.choreography.service import Saga, Service
from choreo.model.envelope import Role
from choreo.model.events import Event
from choreo.tracker.tracker import Tracker
from choreo.viewer import ViewerServer
from choreo.viewer.web import CONTENT_SECURITY_POLICY, HostPolicy

from .samples import XSS, SagaWriter, Sample, feed_sample

REQUIRED_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Reply:
    """One HTTP response: status, headers and body."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        """Return the body decoded as JSON."""
        return json.loads(self.body)


def request(
    server: ViewerServer, path: str, *, method: str = "GET", host: str | None = None
) -> Reply:
    """Send one request with urllib (optionally with a forged Host header) and return the reply."""
    req = urllib.request.Request(server.url.rstrip("/") + path, method=method)
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def raw_request(server: ViewerServer, lines: list[str]) -> bytes:
    """Send a hand-written request (header lines, no body) and return the raw reply."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- JSON API ---------------------------------------------------------------------------


def test_summary_counts_every_status(server: ViewerServer) -> None:
    """The summary has a count for every status, the total, the saga types and a version."""
    summary = request(server, "/api/summary").json()
    assert summary["total"] == 4
    assert summary["counts"] == {
        "Started": 0,
        "Pending": 1,
        "Compensating": 0,
        "Completed": 2,
        "Failed": 1,
        "Stuck": 0,
        "CompensationFailed": 0,
        "Violated": 0,
    }
    assert summary["saga_types"] == ["OrderFulfillment", "Refund"]
    assert summary["version"] > 0


def test_saga_list_is_newest_first_and_paged(server: ViewerServer, sample: Sample) -> None:
    """The list pages newest first and says whether more rows follow."""
    first = request(server, "/api/sagas?limit=2").json()
    assert [row["correlation_id"] for row in first["items"]] == [sample.refund, sample.pending]
    assert first["has_more"] is True
    assert first["total"] == 4
    second = request(server, "/api/sagas?limit=2&offset=2").json()
    assert [row["correlation_id"] for row in second["items"]] == [
        sample.compensated,
        sample.completed,
    ]
    assert second["has_more"] is False
    row = second["items"][0]
    assert row["status"] == "Failed"
    assert row["event_count"] == 5
    assert row["last_event_type"] == "shop.orders.OrderFailed"
    assert row["duration_ms"] == 160


def test_saga_list_filters(server: ViewerServer, sample: Sample) -> None:
    """Status (any case), saga type and correlation-id search each narrow the list."""
    failed = request(server, "/api/sagas?status=failed").json()
    assert [row["correlation_id"] for row in failed["items"]] == [sample.compensated]
    assert failed["total"] == 1
    completed = request(server, "/api/sagas?status=Completed&saga=OrderFulfillment").json()
    assert [row["correlation_id"] for row in completed["items"]] == [sample.completed]
    assert completed["total"] == 1
    found = request(server, f"/api/sagas?q={sample.pending[-6:].upper()}").json()
    assert [row["correlation_id"] for row in found["items"]] == [sample.pending]
    assert found["total"] is None
    assert request(server, "/api/sagas?q=no-such-id").json()["items"] == []


@pytest.mark.parametrize(
    "query", ["status=Happy", "limit=0", "limit=501", "limit=ten", "offset=-1", "q=" + "x" * 201]
)
def test_invalid_list_parameters_are_refused(server: ViewerServer, query: str) -> None:
    """An invalid parameter gets 400 with a JSON error naming it."""
    reply = request(server, f"/api/sagas?{query}")
    assert reply.status == 400
    assert query.split("=", maxsplit=1)[0] in reply.json()["error"]


def test_saga_detail_has_lanes_marks_and_causes(server: ViewerServer, sample: Sample) -> None:
    """A saga's trace has one lane per service, compensations and failures marked, causes linked."""
    detail = request(server, f"/api/sagas/{sample.compensated}").json()
    assert detail["status"] == "Failed"
    assert [lane["service"] for lane in detail["lanes"]] == ["order", "inventory", "payment"]
    events = detail["events"]
    assert [e["role"] for e in events] == [
        "start",
        "step",
        "failure",
        "compensation",
        "failed",
    ]
    assert [e["lane"] for e in events] == [0, 1, 2, 1, 0]
    assert [e["t_ms"] for e in events] == [0, 40, 80, 120, 160]
    assert [e["cause_index"] for e in events] == [None, 0, 1, 2, 3]
    assert events[2]["marks"] == ["failure"]
    assert events[3]["marks"] == ["compensation"]
    assert events[3]["step"] == "inventory.reserve"
    assert events[3]["label"] == "InventoryReleased"
    assert detail["violations"] == []


def test_unknown_saga_and_path_are_404(server: ViewerServer) -> None:
    """An unknown correlation id, event or path gets 404 with a JSON error."""
    assert request(server, "/api/sagas/nope").status == 404
    assert request(server, "/api/sagas/nope/events/x/payload").status == 404
    missing = request(server, "/api/nothing")
    assert missing.status == 404
    assert missing.json() == {"error": "not found"}
    assert request(server, "/static/../web.py").status == 404


def test_correlation_id_with_slash_is_found(tracker: Tracker, server: ViewerServer) -> None:
    """A correlation id holding ``/`` and spaces is reachable percent-encoded."""
    writer = SagaWriter("tenant/7 order 1", start_ms=1_800_000_000_000)
    writer.emit("shop.orders.OrderCreated", Role.START, "order")
    tracker.feed_many(writer.records)
    detail = request(server, "/api/sagas/tenant%2F7%20order%201").json()
    assert detail["correlation_id"] == "tenant/7 order 1"


def test_payload_is_json_with_html_escaped(server: ViewerServer, sample: Sample) -> None:
    """The payload endpoint returns JSON whose markup characters are \\u escapes."""
    reply = request(
        server, f"/api/sagas/{sample.compensated}/events/{sample.declined_event_id}/payload"
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert b"<" not in reply.body and b">" not in reply.body
    assert b"\\u003cscript\\u003e" in reply.body
    body = reply.json()
    assert body["payload"]["reason"] == XSS
    assert body["event_id"] == sample.declined_event_id


def test_payload_of_an_event_of_another_saga_is_404(server: ViewerServer, sample: Sample) -> None:
    """An event id is only looked up within the saga named in the path."""
    reply = request(
        server, f"/api/sagas/{sample.completed}/events/{sample.declined_event_id}/payload"
    )
    assert reply.status == 404


def test_observed_graph_links_events_through_reacting_services(server: ViewerServer) -> None:
    """Without a declared choreography the graph is observed: event -> service reaction -> event."""
    graph = request(server, "/api/graph").json()
    assert graph["source"] == "observed"
    assert graph["sagas_sampled"] == 4
    nodes = {node["id"]: node for node in graph["nodes"]}
    declined = "event:shop.payment.PaymentDeclined"
    released = "event:shop.inventory.InventoryReleased"
    reaction = "handler:inventory<-shop.payment.PaymentDeclined"
    assert nodes[reaction]["label"] == "inventory"
    assert nodes[reaction]["detail"] == "on PaymentDeclined"
    assert nodes["start:order"]["kind"] == "start"
    assert nodes[released]["role"] == "compensation"
    edges = {(e["from"], e["to"]): e for e in graph["edges"]}
    assert edges[(declined, reaction)]["kind"] == "consumes"
    assert edges[(reaction, released)]["kind"] == "emits"
    assert edges[(reaction, released)]["lane"] == "compensation"
    assert edges[("start:order", "event:shop.orders.OrderCreated")]["count"] == 3


@dataclass(frozen=True, slots=True)
class Placed(Event):
    """Test event: an order was placed."""

    __avro_name__: ClassVar[str] = "t.Placed"


@dataclass(frozen=True, slots=True)
class Reserved(Event):
    """Test event: stock was reserved."""

    __avro_name__: ClassVar[str] = "t.Reserved"


@dataclass(frozen=True, slots=True)
class Done(Event):
    """Test event: the order completed."""

    __avro_name__: ClassVar[str] = "t.Done"


@dataclass(frozen=True, slots=True)
class Cancelled(Event):
    """Test event: the order was cancelled."""

    __avro_name__: ClassVar[str] = "t.Cancelled"


def test_declared_graph_is_drawn_from_the_choreography() -> None:
    """A tracker with a choreography serves the declared graph with roles and edge kinds."""
    saga = Saga("Order", start=Placed, completed=[Done], failed=[Cancelled])
    order = Service("order", sagas=[saga])
    order.starts(saga)
    stock = Service("stock", sagas=[saga])

    @stock.pivot(on=Placed, emits=Reserved, fails_with=Cancelled)
    def reserve(event: Placed) -> Reserved:
        return Reserved()

    @order.retriable(on=Reserved, emits=Done)
    def finish(event: Reserved) -> Done:
        return Done()

    choreography = Choreography.from_services([order, stock])
    with ViewerServer(Tracker(choreography=choreography)) as viewer:
        graph = request(viewer, "/api/graph").json()
    assert graph["source"] == "declared"
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["event:t.Placed"]["role"] == "start"
    assert nodes["event:t.Done"]["role"] == "completed"
    assert nodes["event:t.Cancelled"]["role"] == "failed"
    assert nodes["handler:stock.reserve"]["kind"] == "handler"
    edges = {(e["from"], e["to"], e["kind"]) for e in graph["edges"]}
    assert ("start:order.start", "event:t.Placed", "starts") in edges
    assert ("event:t.Placed", "handler:stock.reserve", "consumes") in edges
    assert ("handler:order.finish", "event:t.Done", "emits") in edges
    assert ("handler:stock.reserve", "event:t.Cancelled", "fails_with") in edges


# --- static files -------------------------------------------------------------------------


def test_static_files_are_served_with_their_types(server: ViewerServer) -> None:
    """The page, script and stylesheet are served with the right content types."""
    page = request(server, "/")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'src="/static/app.js"' in page.body
    assert request(server, "/static/app.js").headers["Content-Type"].startswith("text/javascript")
    assert request(server, "/static/app.css").headers["Content-Type"].startswith("text/css")


def test_page_has_no_inline_script_or_style_and_script_never_uses_innerhtml(
    server: ViewerServer,
) -> None:
    """The shipped files fit the CSP and render data as text only."""
    page = request(server, "/").body.decode()
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    script = request(server, "/static/app.js").body.decode()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script


# --- security -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "host"),
    [
        ("GET", "/", None),
        ("GET", "/static/app.js", None),
        ("GET", "/api/summary", None),
        ("GET", "/api/sagas/nope", None),
        ("GET", "/api/sagas?limit=0", None),
        ("HEAD", "/api/stream", None),
        ("POST", "/api/summary", None),
        ("GET", "/api/summary", "evil.example"),
    ],
)
def test_security_headers_on_every_response(
    server: ViewerServer, method: str, path: str, host: str | None
) -> None:
    """Every response, errors and refusals included, carries the CSP and the other headers."""
    if host is not None:
        host = f"{host}:{server.port}"
    reply = request(server, path, method=method, host=host)
    for name, value in REQUIRED_HEADERS.items():
        assert reply.headers[name] == value, (name, reply.status)


def test_wrong_host_is_refused(server: ViewerServer) -> None:
    """A Host header naming another host, or another port, gets 421 and no data."""
    for host in ("evil.example:{port}", "127.0.0.1:{other}", "127.0.0.1.nip.io:{port}"):
        header = host.format(port=server.port, other=server.port + 1)
        reply = request(server, "/api/sagas", host=header)
        assert reply.status == 421, header
        assert b"correlation_id" not in reply.body


def test_missing_host_is_refused(server: ViewerServer) -> None:
    """An HTTP/1.0 request without a Host header is refused."""
    reply = raw_request(server, ["GET /api/summary HTTP/1.0"])
    assert reply.startswith(b"HTTP/1.1 421")


def test_absolute_form_target_must_name_the_server_too(server: ViewerServer) -> None:
    """A request target in absolute form naming another host is refused like a wrong Host."""
    host = f"127.0.0.1:{server.port}"
    refused = raw_request(
        server,
        ["GET http://evil.example/api/summary HTTP/1.1", f"Host: {host}", "Connection: close"],
    )
    assert refused.startswith(b"HTTP/1.1 421")
    served = raw_request(
        server, [f"GET http://{host}/api/summary HTTP/1.1", f"Host: {host}", "Connection: close"]
    )
    assert served.startswith(b"HTTP/1.1 200")


def test_loopback_names_of_the_served_port_are_accepted(server: ViewerServer) -> None:
    """``localhost`` with the served port names the loopback server too."""
    reply = request(server, "/api/summary", host=f"localhost:{server.port}")
    assert reply.status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_methods_other_than_get_and_head_are_refused(server: ViewerServer, method: str) -> None:
    """The viewer is read-only: any other method gets 405 naming GET and HEAD."""
    reply = request(server, "/api/sagas", method=method)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"


def test_head_sends_headers_without_body(server: ViewerServer) -> None:
    """HEAD answers like GET, with the length but no body."""
    get = request(server, "/api/summary")
    head = request(server, "/api/summary", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(get.body))


@pytest.mark.parametrize(
    ("bound", "header", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8765", True),
        ("127.0.0.1", "localhost:8765", True),
        ("127.0.0.1", "[::1]:8765", True),
        ("127.0.0.1", "127.0.0.1", False),
        ("127.0.0.1", "attacker.example:8765", False),
        ("127.0.0.1", "127.0.0.1:80", False),
        ("::1", "[::1]:8765", True),
        ("0.0.0.0", "192.168.1.20:8765", True),
        ("0.0.0.0", "viewer.corp:8765", False),
        ("192.168.1.20", "localhost:8765", False),
        ("127.0.0.1", "[::1:8765", False),
        ("127.0.0.1", "", False),
    ],
)
def test_host_policy(bound: str, header: str, allowed: bool) -> None:
    """The Host check accepts the served address and loopback aliases, never another name."""
    assert HostPolicy(bound, 8765).allows(header) is allowed


def test_host_policy_accepts_configured_names() -> None:
    """Names given as allowed hosts are accepted with the served port."""
    policy = HostPolicy("0.0.0.0", 8765, ["viewer.corp"])
    assert policy.allows("viewer.corp:8765")
    assert not policy.allows("viewer.corp:8766")


# --- live updates -------------------------------------------------------------------------


class EventStream:
    """Reads Server-Sent Events from the viewer's stream over a raw socket."""

    def __init__(self, server: ViewerServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        host = f"{server.host}:{server.port}"
        request = f"GET /api/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        self.status_line, _, headers = head.partition(b"\r\n")
        self.headers = headers.decode()

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("stream closed")
            self.buffer += chunk
        block, _, self.buffer = self.buffer.partition(separator)
        return block

    def next_event(self) -> tuple[str, dict[str, Any]]:
        """Return the next event's name and JSON data, skipping comments."""
        while True:
            block = self._until(b"\n\n").decode()
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
            )
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def test_stream_sends_a_change_after_feed(
    tracker: Tracker, server: ViewerServer, sample: Sample
) -> None:
    """The SSE stream says hello with the version, then sends change when a record is fed."""
    stream = EventStream(server)
    try:
        assert stream.status_line == b"HTTP/1.1 200 OK"
        assert "Content-Type: text/event-stream" in stream.headers
        assert f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}" in stream.headers
        name, data = stream.next_event()
        assert (name, data["version"]) == ("hello", tracker.version)
        before = tracker.version
        sample.pending_writer.emit("shop.payment.PaymentCharged", Role.STEP, "payment")
        tracker.feed(sample.pending_writer.records[-1])
        name, data = stream.next_event()
        assert name == "change"
        assert data["version"] > before
    finally:
        stream.close()


def test_stop_ends_open_streams(tracker: Tracker, sample: Sample) -> None:
    """Stopping the server closes event streams that are still open."""
    viewer = ViewerServer(tracker).start()
    stream = EventStream(viewer)
    assert stream.next_event()[0] == "hello"
    closed = threading.Event()

    def drain() -> None:
        try:
            while True:
                stream.next_event()
        except (EOFError, OSError):
            closed.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    started = time.monotonic()
    viewer.stop()
    assert closed.wait(30), "the stream stayed open after stop()"
    assert time.monotonic() - started < 30
    stream.close()


class BrokenTracker(Tracker):
    """A tracker whose counts fail, to see how the server answers an internal error."""

    def counts(self) -> dict[Any, int]:
        """Fail."""
        raise RuntimeError("boom")


def test_internal_error_is_logged_and_answered_with_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception in a view gets a JSON 500 with the security headers and a logged traceback."""
    with ViewerServer(BrokenTracker()) as viewer, caplog.at_level("ERROR", "choreo.viewer.web"):
        reply = request(viewer, "/api/summary")
    assert reply.status == 500
    assert reply.json() == {"error": "internal error (logged)"}
    assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert any("boom" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_compacted_sagas_still_show_their_trace_without_payloads() -> None:
    """A finished saga the tracker has compacted shows its events; its payloads are gone (404)."""
    compacting = Tracker(decode=json.loads, keep_finished=0, default_deadline_s=10**9)
    sample = feed_sample(compacting)
    with ViewerServer(compacting) as viewer:
        detail = request(viewer, f"/api/sagas/{sample.compensated}").json()
        payload = request(
            viewer, f"/api/sagas/{sample.compensated}/events/{sample.declined_event_id}/payload"
        )
    assert [e["role"] for e in detail["events"]][-2:] == ["compensation", "failed"]
    assert payload.status == 404
    assert "no payload kept" in payload.json()["error"]
