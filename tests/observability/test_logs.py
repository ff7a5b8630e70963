"""JSON log lines: fixed keys, event ids from EventLogger, secrets masked, bounded, escaped."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from choreo.model.context import EventLogger
from choreo.observability.logs import MAX_FIELD, MAX_MESSAGE, JsonFormatter, use_json_logs


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """Return a logger whose records are written as JSON lines into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.observability.json")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    """Return the JSON objects written, one per line."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_event_logger_fields_become_keys_and_the_prefix_leaves_the_message(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A record from an EventLogger carries the event's ids as keys; the message is bare."""
    log, stream = captured
    event_log = EventLogger(
        log,
        {
            "service": "payment",
            "event_type": "shop.payments.PaymentCharged",
            "correlation_id": "order-7",
            "event_id": "6f1c1f0e-0000-5000-8000-000000000001",
            "saga": "OrderFulfillment",
        },
    )
    event_log.warning("charged %d cents", 1200)
    [line] = lines(stream)
    assert line["message"] == "charged 1200 cents"
    assert line["level"] == "WARNING"
    assert line["logger"] == "tests.observability.json"
    assert line["service"] == "payment"
    assert line["event_type"] == "shop.payments.PaymentCharged"
    assert line["correlation_id"] == "order-7"
    assert line["event_id"] == "6f1c1f0e-0000-5000-8000-000000000001"
    assert line["saga"] == "OrderFulfillment"
    assert str(line["ts"]).endswith("+00:00")


def test_a_plain_record_has_no_event_keys_and_placeholders_are_dropped(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A record that concerns no event has only the base keys; "-" placeholders are left out."""
    log, stream = captured
    log.info("worker started")
    EventLogger(log, {"service": "order", "event_type": "-", "correlation_id": "-"}).info("x")
    plain, stamped = lines(stream)
    assert set(plain) == {"ts", "level", "logger", "message"}
    assert stamped["service"] == "order"
    assert "event_type" not in stamped and "correlation_id" not in stamped


def test_other_extra_fields_are_never_written(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """Only the fixed keys are written: an ``extra`` holding a secret does not leak."""
    log, stream = captured
    log.info("connecting", extra={"sasl_password": "hunter2", "service": "inventory"})
    [line] = lines(stream)
    assert "hunter2" not in json.dumps(line)
    assert line["service"] == "inventory"


def test_secret_values_in_messages_and_exceptions_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """``password=…``-style values are masked in the message and in the traceback text."""
    log, stream = captured
    try:
        raise RuntimeError("login failed: sasl.password=hunter2 token: abc123")
    except RuntimeError:
        log.exception("cannot connect with sasl.jaas.config='x y z' user=alice")
    [line] = lines(stream)
    text = json.dumps(line)
    assert "hunter2" not in text and "abc123" not in text and "x y z" not in text
    assert "user=alice" in str(line["message"])
    assert "RuntimeError" in str(line["exception"])
    assert "sasl.password=***" in str(line["exception"])


def test_control_characters_stay_escaped_and_lengths_are_bounded(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A message with newlines and ANSI escapes stays one line; long values are cut."""
    log, stream = captured
    hostile = "evil\n\x1b[31mred\x1b[0m" + "x" * (2 * MAX_MESSAGE)
    EventLogger(log, {"service": "s", "event_type": "t", "correlation_id": "c" * 10_000}).error(
        hostile
    )
    raw = stream.getvalue()
    assert raw.count("\n") == 1 and "\x1b" not in raw
    [line] = lines(stream)
    assert len(str(line["message"])) == MAX_MESSAGE
    assert len(str(line["correlation_id"])) == MAX_FIELD
    assert str(line["message"]).startswith("evil\n\x1b[31mred")


def test_use_json_logs_replaces_the_root_handlers() -> None:
    """use_json_logs leaves one JSON handler on the root logger, with static keys."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        use_json_logs("INFO", stream=stream, static={"service": "shipping"})
        assert len(root.handlers) == 1
        logging.getLogger("choreo.test").info("hello")
        logging.getLogger("choreo.test").debug("not written")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    [line] = lines(stream)
    assert line["message"] == "hello" and line["service"] == "shipping"


def test_lines_carry_the_current_span_ids_when_opentelemetry_is_used(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """Inside an OpenTelemetry span a line carries that span's trace and span ids."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    log, stream = captured
    with tracer.start_as_current_span("work") as span:
        log.info("inside")
    log.info("outside")
    inside, outside = lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


def test_a_worker_s_lines_about_events_carry_their_ids() -> None:
    """Retries, dead letters and handler lines of a real worker carry the event's ids."""
    from runtime.fixtures.events import OrderPlaced
    from runtime.fixtures.serdes import avro_serde
    from runtime.fixtures.shop import ShopState, build_shop

    from choreo.runtime import Publisher, WorkerConfig

    from .shop import Workers

    state = ShopState()
    state.flaky["payment.authorize"] = 1
    state.broken.add("notifier.tell")
    shop = build_shop(state)
    workers = Workers(shop.services, avro_serde(), [], config=WorkerConfig(poll_timeout=0.0))
    publisher = Publisher(shop.orders, workers.transport, avro_serde())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        cid = publisher.start(shop.saga, OrderPlaced("o-1", "book", 1, 100))
        workers.run_until_idle()
    finally:
        root.removeHandler(handler)
        publisher.close()
        workers.close()
    about_events = [line for line in lines(stream) if "event_type" in line]
    assert {line["level"] for line in about_events} >= {"WARNING", "ERROR"}
    for line in about_events:
        assert line["correlation_id"] == cid
        assert line["saga"] == "Fulfilment"
        assert str(line["event_id"]).count("-") == 4  # a UUID
        assert line["service"] in {"payment", "notifier"}
        assert not str(line["message"]).startswith("[")  # the text prefix is dropped
    dead = [line for line in about_events if line["level"] == "ERROR"]
    assert dead and "RuntimeError" in str(dead[0]["exception"])


def test_hostile_text_is_redacted_in_one_pass(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """Long runs that look like names, markers or schemes do not make redaction quadratic.

    (Before the redaction patterns matched only at the start of a run, 8,000 characters
    took seconds and 100,000 minutes; this line would hit the test timeout.)
    """
    log, stream = captured
    hostile = "password" * 40_000 + "x" * 200_000 + "http://" * 40_000 + " token=abc"
    log.error("%s", hostile)
    [line] = lines(stream)
    assert len(str(line["message"])) == MAX_MESSAGE
