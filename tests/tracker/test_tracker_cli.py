"""The tracker commands over an exported file and over the memory transport."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from tracker_log import T0, SagaLog, to_records

from choreo.cli import main
from choreo.cli.tracker_cmd import parse_time
from choreo.model.envelope import Role
from choreo.tracker.fold import Code
from choreo.tracker.sources import read_container_file, write_container_file
from choreo.transports.memory import MemoryBus, MemoryTransport

WIDE = {"COLUMNS": "250"}


def run(*args: str, obj: object = None) -> Result:
    """Invoke the choreo CLI with a wide terminal."""
    return CliRunner().invoke(main, list(args), env=WIDE, obj=obj, catch_exceptions=False)


def clean_logs() -> list[SagaLog]:
    """Return two completed sagas, one declined, one still running (started long ago)."""
    logs = [
        SagaLog(cid="aaaa-completed-1", start_ms=T0).completed(),
        SagaLog(cid="bbbb-completed-2", start_ms=T0 + 60_000).completed(),
        SagaLog(cid="cccc-declined", start_ms=T0 + 120_000).declined(),
    ]
    running = SagaLog(cid="dddd-running", start_ms=T0 + 180_000)
    running.start()
    logs.append(running)
    return logs


def violated_logs() -> list[SagaLog]:
    """Return the clean logs plus one saga that completes after its failure."""
    bad = SagaLog(cid="eeee-violated", start_ms=T0 + 240_000)
    s = bad.start()
    d = bad.emit(s, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    bad.emit(d, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
    return [*clean_logs(), bad]


def export_file(path: Path, logs: list[SagaLog], *, tail_ms: int = 0) -> Path:
    """Write the logs' records to a container file; the newest timestamp is moved by tail_ms."""
    records = [r for log in logs for r in to_records(log.envelopes)]
    if tail_ms:
        from dataclasses import replace

        newest = max(records, key=lambda r: r.timestamp_ms)
        records[records.index(newest)] = replace(newest, timestamp_ms=newest.timestamp_ms + tail_ms)
    write_container_file(path, records)
    return path


def test_verify_clean_file_exits_zero(tmp_path: Path) -> None:
    """A clean log passes with the number of sagas and events."""
    path = export_file(tmp_path / "clean.avro", clean_logs())
    result = run("verify", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert "no violation in 4 sagas (16 events)" in result.output


def test_verify_flags_injected_violations(tmp_path: Path) -> None:
    """A log with a violation exits 1 naming the saga, the code and what happened."""
    path = export_file(tmp_path / "bad.avro", violated_logs())
    result = run("verify", "--file", str(path))
    assert result.exit_code == 1
    assert "eeee-violated" in result.output
    assert Code.COMPLETED_AFTER_FAILURE in result.output
    assert "trk.PaymentDeclined" in result.output
    assert "1 violation(s) in 1 of 5 sagas (19 events)" in result.output


def test_sagas_lists_and_counts(tmp_path: Path) -> None:
    """sagas shows every saga newest first and the counts per status."""
    path = export_file(tmp_path / "log.avro", clean_logs())
    result = run("sagas", "--file", str(path))
    assert result.exit_code == 0, result.output
    order = [m.group(0) for m in re.finditer(r"[a-d]{4}-[a-z]+(-\d)?", result.output)]
    assert order[:4] == ["dddd-running", "cccc-declined", "bbbb-completed-2", "aaaa-completed-1"]
    assert "4 sagas, 16 events from 16 records" in result.output
    completed = run("sagas", "--file", str(path), "--state", "completed")
    assert "2 saga(s)" in completed.output
    assert "cccc-declined" not in completed.output.split("All sagas")[0]


def test_sagas_filters_by_status_under_its_name(tmp_path: Path) -> None:
    """--status filters like --state (its older name), on statuses beyond the states too."""
    path = export_file(tmp_path / "log.avro", clean_logs(), tail_ms=600_000)
    by_status = run("sagas", "--file", str(path), "--status", "Completed")
    assert by_status.exit_code == 0, by_status.output
    listed = by_status.output.split("All sagas")[0]
    assert "2 saga(s)" in listed
    assert "aaaa-completed-1" in listed
    assert "cccc-declined" not in listed
    assert by_status.output == run("sagas", "--file", str(path), "--state", "Completed").output
    stuck = run("sagas", "--file", str(path), "--status", "stuck").output.split("All sagas")[0]
    assert "1 saga(s)" in stuck
    assert "dddd-running" in stuck


def test_sagas_stuck_is_judged_at_the_export_time(tmp_path: Path) -> None:
    """On a file, now is the newest record: a saga idle for longer than its deadline is stuck."""
    path = export_file(tmp_path / "log.avro", clean_logs(), tail_ms=600_000)
    stuck = run("sagas", "--file", str(path), "--stuck")
    assert "1 saga(s)" in stuck.output
    assert "dddd-running" in stuck.output
    fresh = run("sagas", "--file", str(path), "--stuck", "--now", str(T0 + 180_020))
    assert "0 saga(s)" in fresh.output


def test_sagas_time_window(tmp_path: Path) -> None:
    """--since/--until select by start time (epoch ms or ISO 8601)."""
    path = export_file(tmp_path / "log.avro", clean_logs())
    result = run(
        "sagas", "--file", str(path), "--since", str(T0 + 60_000), "--until",
        "2023-11-14T22:15:20.010Z",
    )
    assert "2 saga(s)" in result.output
    assert "bbbb-completed-2" in result.output and "cccc-declined" in result.output


def test_trace_by_prefix_shows_the_timeline(tmp_path: Path) -> None:
    """trace accepts a unique part of the id and shows events, compensations and causes."""
    path = export_file(tmp_path / "log.avro", violated_logs())
    result = run("trace", "cccc", "--file", str(path))
    assert result.exit_code == 0, result.output
    for text in ("cccc-declined", "trk.InventoryReleased [compensation]", "+10 ms",
                 "<- trk.PaymentDeclined", "Failed"):
        assert text in result.output
    bad = run("trace", "eeee-violated", "--file", str(path))
    assert Code.COMPLETED_AFTER_FAILURE in bad.output
    assert "1 violation(s)" in bad.output


def test_trace_unknown_or_ambiguous(tmp_path: Path) -> None:
    """An unknown id and an ambiguous prefix are clean errors."""
    path = export_file(tmp_path / "log.avro", clean_logs())
    unknown = run("trace", "zzzz", "--file", str(path))
    assert unknown.exit_code == 1
    assert "no saga with correlation id 'zzzz'" in unknown.output
    ambiguous = run("trace", "completed", "--file", str(path))
    assert ambiguous.exit_code == 1
    assert "matches several sagas" in ambiguous.output


def test_watch_once_over_a_file(tmp_path: Path) -> None:
    """watch --file prints one frame with counts and the newest sagas."""
    path = export_file(tmp_path / "log.avro", clean_logs())
    result = run("watch", "--file", str(path), "--latest", "2")
    assert result.exit_code == 0, result.output
    assert "4 sagas" in result.output
    assert "dddd-running" in result.output and "aaaa-completed-1" not in result.output


def publish(transport: MemoryTransport, logs: list[SagaLog]) -> int:
    """Publish the logs on the memory bus; return how many events."""
    producer = transport.producer()
    count = 0
    for log in logs:
        for env in log.envelopes:
            producer.publish(env.event_type, b"v", key=env.correlation_id.encode(),
                             headers=env.to_headers())
            count += 1
    producer.flush()
    return count


def test_watch_follows_the_memory_transport() -> None:
    """watch over a transport shows what was published, then exits after --duration."""
    transport = MemoryTransport(MemoryBus())
    publish(transport, clean_logs())
    result = run("watch", "--duration", "1.5", "--refresh", "0.1",
                 obj={"transport": transport})
    assert result.exit_code == 0, result.output
    assert "4 sagas" in result.output


def test_verify_over_the_memory_transport() -> None:
    """verify reads the transport's topics until idle and flags the violation."""
    transport = MemoryTransport(MemoryBus())
    publish(transport, violated_logs())
    result = run("verify", "--idle", "0.3", obj={"transport": transport})
    assert result.exit_code == 1
    assert "eeee-violated" in result.output


def test_export_then_import(tmp_path: Path) -> None:
    """export writes every record of the selected topics; import republishes them."""
    source = MemoryTransport(MemoryBus())
    count = publish(source, clean_logs())
    source.producer().publish("other.noise", b"x")
    out = tmp_path / "out.avro"
    result = run("export", "-o", str(out), "--topics", "^trk\\.", "--idle", "0.3",
                 obj={"transport": source})
    assert result.exit_code == 0, result.output
    assert f"exported {count} records" in result.output
    records = list(read_container_file(out))
    assert len(records) == count
    assert all(r.topic.startswith("trk.") for r in records)

    target_bus = MemoryBus()
    result = run("import", str(out), "--topic-prefix", "copy.",
                 obj={"transport": MemoryTransport(target_bus)})
    assert result.exit_code == 0, result.output
    assert f"imported {count} records" in result.output
    copied = [r for t in target_bus.topics() for r in target_bus.records(t)]
    assert all(t.startswith("copy.trk.") for t in target_bus.topics())
    assert sorted((r.key, r.headers) for r in copied) == sorted(
        (r.key, r.headers) for r in records
    )
    verified = run("verify", "--file", str(out))
    assert "no violation in 4 sagas" in verified.output


def test_source_is_required_and_exclusive(tmp_path: Path) -> None:
    """Without a source, or with two, the command is a usage error."""
    assert run("sagas").exit_code == 2
    path = export_file(tmp_path / "log.avro", clean_logs())
    both = run("sagas", "--file", str(path), "--bootstrap", "localhost:1")
    assert both.exit_code == 2
    assert "not both" in both.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
        ("15m", 1_700_000_000_000 - 900_000),
        ("2h", 1_700_000_000_000 - 7_200_000),
        ("1.5s", 1_700_000_000_000 - 1_500),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    """Times are epoch ms, ISO 8601 (naive is UTC) or a duration ago."""
    assert parse_time(text, now_ms=1_700_000_000_000) == expected


def test_parse_time_rejects_nonsense() -> None:
    """Anything else is a bad parameter."""
    with pytest.raises(click.BadParameter):
        parse_time("yesterday-ish", now_ms=0)


def test_trace_with_the_graph_names_what_comes_next(tmp_path: Path) -> None:
    """With --graph a running saga's trace says which events may come next."""
    log = SagaLog(cid="ffff-running")
    s = log.start()
    log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    path = export_file(tmp_path / "log.avro", [log])
    result = run("trace", "ffff", "--file", str(path), "--graph", "tracker_log:CHOREOGRAPHY")
    assert result.exit_code == 0, result.output
    assert "next event (trk.PaymentCharged, trk.PaymentDeclined) due by" in result.output


def test_verify_with_the_graph_finds_missing_compensations(tmp_path: Path) -> None:
    """With --graph a failed saga that left a compensatable step undone is a violation."""
    log = SagaLog(cid="gggg-half-undone")
    s = log.start()
    r = log.emit(s, "trk.InventoryReserved", Role.STEP, "inventory", "inventory.reserve")
    d = log.emit(r, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    log.emit(d, "trk.OrderFailed", Role.FAILED, "order", "order.start")
    path = export_file(tmp_path / "log.avro", [log])
    assert run("verify", "--file", str(path)).exit_code == 0
    result = run("verify", "--file", str(path), "--graph", "tracker_log:CHOREOGRAPHY")
    assert result.exit_code == 1
    assert Code.COMPENSATION_MISSING in result.output
    assert "inventory.reserve" in result.output
