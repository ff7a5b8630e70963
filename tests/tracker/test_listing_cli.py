"""The listing commands in a terminal of any width, as JSON, and by business key."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tracker_log import T0, SagaLog, to_records

from choreo.avro.codec import SingleObjectCodec
from choreo.avro.loader import load_directory
from choreo.cli import main
from choreo.model.envelope import Header, Role
from choreo.tracker.sources import write_container_file

HEADERS = ("Correlation id", "Saga", "Status", "Started (UTC)", "Duration", "Events", "Last event")


def run(*args: str, columns: int = 250) -> Result:
    """Invoke the CLI in a terminal ``columns`` wide."""
    return CliRunner().invoke(main, list(args), env={"COLUMNS": str(columns)},
                              catch_exceptions=False)


def uuid_logs(count: int = 6, saga: str = "OrderFulfillmentWithALongName") -> list[SagaLog]:
    """Return sagas with uuid correlation ids: completed, declined and one left running."""
    logs = []
    for i in range(count):
        log = SagaLog(cid=str(uuid.UUID(int=i + 1)), saga=saga, start_ms=T0 + i * 60_000)
        if i == count - 1:
            log.start()
        elif i % 2:
            log.declined()
        else:
            log.completed()
        logs.append(log)
    return logs


def export(path: Path, logs: list[SagaLog]) -> Path:
    """Write the sagas' records to a container file."""
    write_container_file(path, [r for log in logs for r in to_records(log.envelopes)])
    return path


def rows_of(output: str, ids: list[str]) -> dict[str, str]:
    """Return, per correlation id, the output line that starts its row."""
    return {cid: next(line for line in output.splitlines() if cid in line) for cid in ids}


@pytest.mark.parametrize("columns", [80, 100, 120, 250])
def test_sagas_keep_id_and_status_at_any_width(tmp_path: Path, columns: int) -> None:
    """Every line fits; each row shows its whole id and its status; no header is cut or doubled."""
    logs = uuid_logs()
    path = export(tmp_path / "log.avro", logs)
    result = run("sagas", "--file", str(path), "--now", str(T0), columns=columns)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    rows = rows_of(result.output, [log.cid for log in logs])
    assert all(re.search(r"\b(Completed|Failed|Started|Pending)\b", row) for row in rows.values())
    listing = result.output.split("All sagas by status")[0]
    for header in HEADERS:
        assert listing.count(header) <= 1
    for fragment in ("Correla", "Durati", "Start"):  # a cut header leaves a fragment alone
        assert all(line.strip() != fragment for line in lines)
    shown = [h for h in HEADERS if h in listing]
    assert shown[:1] == ["Correlation id"] and "Status" in shown
    if columns >= 250:
        assert shown == list(HEADERS)
    if columns == 80:
        assert "Started (UTC)" in shown  # the start time is the first column added back
        assert "Last event" not in shown


def test_a_long_correlation_id_folds_instead_of_being_cut(tmp_path: Path) -> None:
    """An id longer than the terminal is folded onto several lines, every character shown."""
    cid = "order-" + "x" * 100 + "-end"
    log = SagaLog(cid=cid, start_ms=T0).completed()
    path = export(tmp_path / "log.avro", [log])
    result = run("sagas", "--file", str(path), columns=80)
    assert result.exit_code == 0
    assert all(len(line) <= 80 for line in result.output.splitlines())
    assert "Completed" in result.output
    joined = "".join(line.strip().split(" ")[0] for line in result.output.splitlines())
    assert cid in joined


def test_watch_and_verify_fit_80_columns(tmp_path: Path) -> None:
    """The watch frame and the violation table fit 80 columns and keep ids whole."""
    logs = uuid_logs()
    bad = SagaLog(cid=str(uuid.UUID(int=99)), start_ms=T0 + 600_000)
    start = bad.start()
    declined = bad.emit(start, "trk.PaymentDeclined", Role.FAILURE, "payment", "payment.charge")
    bad.emit(declined, "trk.OrderCompleted", Role.COMPLETED, "order", "order.complete")
    path = export(tmp_path / "log.avro", [*logs, bad])
    watch = run("watch", "--file", str(path), columns=80)
    assert watch.exit_code == 0
    assert all(len(line) <= 80 for line in watch.output.splitlines())
    assert bad.cid in watch.output and "Violated" in watch.output
    verify = run("verify", "--file", str(path), columns=80)
    assert verify.exit_code == 1
    assert all(len(line) <= 80 for line in verify.output.splitlines())
    assert bad.cid in verify.output and "completed-after-failure" in verify.output


def test_sagas_json_lists_rows_counts_and_records(tmp_path: Path) -> None:
    """--json prints one document: the rows shown, how many matched, counts, records read."""
    logs = uuid_logs()
    path = export(tmp_path / "log.avro", logs)
    result = run("sagas", "--file", str(path), "--json", "--status", "failed", "--limit", "1")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["matching"] == 2 and document["shown"] == 1
    [row] = document["sagas"]
    assert row["correlation_id"] == logs[3].cid and row["status"] == "Failed"
    assert document["counts"]["Completed"] == 3 and document["total"] == 6
    assert document["records"]["read"] == document["records"]["events"] == 26  # 3*5 + 2*5 + 1


def test_time_filters_take_durations_iso_times_and_epoch_ms(tmp_path: Path) -> None:
    """--since 3m (ago, from --now), an ISO time and epoch ms select by start time."""
    logs = uuid_logs()
    path = export(tmp_path / "log.avro", logs)
    now = str(T0 + 5 * 60_000)

    def cids(*args: str) -> list[str]:
        result = run("sagas", "--file", str(path), "--json", "--now", now, *args)
        assert result.exit_code == 0, result.output
        return [row["correlation_id"] for row in json.loads(result.output)["sagas"]]

    assert cids("--since", "3m") == [logs[5].cid, logs[4].cid, logs[3].cid, logs[2].cid]
    assert cids("--since", "3m ago", "--status", "FAILED") == [logs[3].cid]
    assert cids("--until", "2023-11-14T22:14:20.010Z") == [logs[1].cid, logs[0].cid]
    assert cids("--since", str(T0 + 240_000), "--until", str(T0 + 300_010)) == [
        logs[5].cid, logs[4].cid
    ]


def test_bad_time_says_what_a_time_is(tmp_path: Path) -> None:
    """An unreadable --since lists the accepted forms."""
    path = export(tmp_path / "log.avro", uuid_logs(2))
    result = run("sagas", "--file", str(path), "--since", "last tuesday")
    assert result.exit_code == 2
    assert "duration ago (30s, 15m, 2h, 7d)" in result.output
    assert "ISO 8601" in result.output


def test_trace_and_verify_json(tmp_path: Path) -> None:
    """trace --json is the saga's detail; verify --json the verdict, exit 1 on a violation."""
    logs = uuid_logs(3)
    path = export(tmp_path / "log.avro", logs)
    trace = run("trace", logs[1].cid[-6:], "--file", str(path), "--json")
    assert trace.exit_code == 0, trace.output
    detail = json.loads(trace.output)
    assert detail["correlation_id"] == logs[1].cid and detail["status"] == "Failed"
    assert [e["role"] for e in detail["events"]][-1] == "failed"
    verify = run("verify", "--file", str(path), "--json")
    assert verify.exit_code == 0
    assert json.loads(verify.output)["ok"] is True
    watch = run("watch", "--file", str(path), "--json", "--latest", "2")
    assert [r["correlation_id"] for r in json.loads(watch.output)["sagas"]] == [
        logs[2].cid, logs[1].cid
    ]


ORDER_SCHEMA = {
    "type": "record",
    "name": "OrderCreated",
    "namespace": "trk",
    "doc": "An order.",
    "fields": [
        {"name": "order_id", "type": "string", "doc": "The order."},
        {
            "name": "customer",
            "doc": "Who ordered.",
            "type": {
                "type": "record",
                "name": "Customer",
                "doc": "A customer.",
                "fields": [{"name": "email", "type": "string", "doc": "Their email."}],
            },
        },
    ],
}


@pytest.fixture
def keyed_file(tmp_path: Path) -> tuple[Path, Path, list[SagaLog]]:
    """Export sagas whose start events carry Avro payloads and a tenant header."""
    schemas = tmp_path / "schemas"
    (schemas / "trk").mkdir(parents=True)
    (schemas / "trk" / "OrderCreated.v1.avsc").write_text(json.dumps(ORDER_SCHEMA))
    codec = SingleObjectCodec(load_directory(schemas))
    logs = uuid_logs(4)
    records = []
    for i, log in enumerate(logs):
        for original in to_records(log.envelopes):
            record = original
            if dict(record.headers)[Header.EVENT_TYPE] == b"trk.OrderCreated":
                email = "Alice@Example.com" if i % 2 == 0 else "bob@example.com"
                body = codec.encode(
                    "trk.OrderCreated", {"order_id": f"A-{i}", "customer": {"email": email}}
                )
                tenant = b"acme\x1b[31m" if i == 3 else b"acme"
                headers = (*record.headers, ("x-tenant", tenant))
                record = replace(record, value=body, headers=headers)
            records.append(record)
    path = tmp_path / "keyed.avro"
    write_container_file(path, records)
    return path, schemas, logs


def test_where_and_find_select_sagas_by_business_key(
    keyed_file: tuple[Path, Path, list[SagaLog]],
) -> None:
    """--where FIELD=VALUE (payload field or header) and --find VALUE select sagas."""
    path, schemas, logs = keyed_file

    def cids(*args: str) -> list[str]:
        result = run("sagas", "--file", str(path), "--schemas", str(schemas), "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["correlation_id"] for row in json.loads(result.output)["sagas"]]

    assert cids("--where", "order_id=A-2") == [logs[2].cid]
    assert cids("--where", "email=alice@example.com") == [logs[2].cid, logs[0].cid]
    assert cids("--find", "BOB@example.com") == [logs[3].cid, logs[1].cid]
    assert cids("--find", "bob@example.com", "--where", "x-tenant=acme") == [logs[1].cid]
    assert cids("--find", "bob@example.com", "--status", "Started") == [logs[3].cid]
    result = run("sagas", "--file", str(path), "--schemas", str(schemas), "--json",
                 "--where", "customer.email=alice@example.com")
    assert json.loads(result.output)["sagas"][0]["matched_fields"] == ["customer.email"]


def test_key_search_without_schemas_looks_at_headers_and_says_so(
    keyed_file: tuple[Path, Path, list[SagaLog]],
) -> None:
    """Without --schemas only headers are searched, and a note says how to search payloads."""
    path, _, logs = keyed_file
    result = run("sagas", "--file", str(path), "--where", "x-tenant=acme")
    assert result.exit_code == 0
    assert "without --schemas DIR" in result.stderr
    assert all(log.cid in result.stdout for log in logs[:3])
    assert "order_id" not in result.stdout
    none = run("sagas", "--file", str(path), "--where", "order_id=A-1", "--json")
    assert json.loads(none.stdout)["matching"] == 0


def test_malformed_where_is_a_usage_error_saying_what_to_write(tmp_path: Path) -> None:
    """--where without '=' exits 2 with an example."""
    path = export(tmp_path / "log.avro", uuid_logs(1))
    result = run("sagas", "--file", str(path), "--where", "order_id")
    assert result.exit_code == 2
    assert "FIELD=VALUE: write e.g. order_id=123" in result.output
