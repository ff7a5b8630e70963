"""The peers benchmark's report: spreads over repeats, ratios, targets, the README tables.

Every cell (implementation, sagas, partitions, replicas) is run ``--repeat`` times,
interleaved with the other implementations; :func:`combine` keeps every run and gives
min/median/max of each figure. Ratios are against ``ceiling`` and ``raw`` of the same cell
in the same run (a Kafka-free peer: of the same saga count at the fewest partitions), as a
ratio of medians and as the spread of the per-repeat ratios (repeat i against repeat i).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPREAD_KEYS = (
    "sagas_per_s",
    "cpu_ms_per_saga",
    "python_cpu_ms_per_saga",
    "rdkafka_cpu_ms_per_saga",
    "broker_cpu_ms_per_saga",
    "postgres_cpu_ms_per_saga",
    "harness_cpu_ms_per_saga",
    "machine_busy_cores",
    "peak_rss_mb",
    "idle_service_cpu_ms_per_s",
)
BASELINES = ("ceiling", "raw")
KAFKA_FREE = frozenset({"dbos-postgres", "dbos-sqlite"})
BEGIN = "<!-- peers:results:begin -->"
END = "<!-- peers:results:end -->"

Row = dict[str, Any]


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def combine(runs: list[Row]) -> Row:
    """Return one row for repeated runs of a cell: medians, min/median/max, every run kept."""
    measured = [r for r in runs if "sagas_per_s" in r]
    row: Row = dict(runs[0])
    for key in ("latency_ms", "paths", "service_cpu_ms_per_saga_by_service", "runs"):
        row.pop(key, None)
    row["repeats"] = len(runs)
    row["runs"] = runs
    if not measured:
        return row
    spread: dict[str, Any] = {}
    for key in SPREAD_KEYS:
        values = [r[key] for r in measured if r.get(key) is not None]
        spread[key] = _spread(values)
        row[key] = spread[key]["median"] if spread[key] else None
    for pct in ("p50", "p99"):
        spread[pct] = _spread([r["latency_ms"][pct] for r in measured])
    row["spread"] = spread
    row["latency_ms"] = {pct: spread[pct]["median"] for pct in ("p50", "p99")}
    services = {s for r in measured for s in r.get("service_cpu_ms_per_saga_by_service", {})}
    row["service_cpu_ms_per_saga_by_service"] = {
        s: round(
            statistics.median(
                r["service_cpu_ms_per_saga_by_service"].get(s, 0.0) for r in measured
            ),
            4,
        )
        for s in sorted(services)
    }
    bad = [r for r in runs if r.get("status") != "ok" or r.get("state_check", "ok") != "ok"]
    row["status"] = "ok" if not bad else bad[0].get("status", "?")
    row["state_check"] = "ok" if not bad else bad[0].get("state_check", "?")
    row["failed_runs"] = len(bad)
    return row


# --- ratios ----------------------------------------------------------------------------------


def _baseline(rows: list[Row], name: str, row: Row) -> Row | None:
    """Return the row of baseline ``name`` that ``row`` is compared with, if measured."""
    same = [
        r
        for r in rows
        if r["impl"] == name
        and r["sagas"] == row["sagas"]
        and r.get("replicas", 1) == row.get("replicas", 1)
        and "sagas_per_s" in r
    ]
    if row["impl"] in KAFKA_FREE:
        return min(same, key=lambda r: r["partitions"], default=None)
    return next((r for r in same if r["partitions"] == row["partitions"]), None)


def ratio(a: float | None, b: float | None) -> float | None:
    """Return a / b rounded, or None when either is missing or b is zero."""
    return round(a / b, 3) if a is not None and b else None


def _paired(row: Row, base: Row, key: str) -> dict[str, float] | None:
    """Return the spread of per-repeat ratios of ``key`` (repeat i against repeat i)."""
    mine = [r.get(key) for r in row.get("runs", [])]
    theirs = [r.get(key) for r in base.get("runs", [])]
    values = [v for a, b in zip(mine, theirs, strict=False) if (v := ratio(a, b)) is not None]
    return _spread(values)


def add_ratios(rows: list[Row]) -> None:
    """Add ``vs_ceiling`` and ``vs_raw`` to each row: ratios of medians and paired spreads."""
    for row in rows:
        if "sagas_per_s" not in row:
            continue
        for name in BASELINES:
            base = _baseline(rows, name, row)
            if base is None:
                continue
            row[f"vs_{name}"] = {
                "sagas_per_s": ratio(row["sagas_per_s"], base["sagas_per_s"]),
                "cpu_ms_per_saga": ratio(row["cpu_ms_per_saga"], base["cpu_ms_per_saga"]),
                "p99": ratio(row["latency_ms"]["p99"], base["latency_ms"]["p99"]),
                "paired_sagas_per_s": _paired(row, base, "sagas_per_s"),
                "paired_cpu_ms_per_saga": _paired(row, base, "cpu_ms_per_saga"),
                "baseline_partitions": base["partitions"],
            }


# --- targets ---------------------------------------------------------------------------------


def _find(rows: list[Row], impl: str, sagas: int, partitions: int | None) -> Row | None:
    for r in rows:
        if r["impl"] != impl or r["sagas"] != sagas or r.get("replicas", 1) != 1:
            continue
        if "sagas_per_s" in r and (partitions is None or r["partitions"] == partitions):
            return r
    return None


def _check(label: str, value: float | None, bound: float, *, higher: bool) -> str:
    if value is None:
        return f"{label}: n/a"
    ok = value >= bound if higher else value <= bound
    return f"{label}: {value:.2f}x {'✅' if ok else '❌'}"


def total_cpu(row: Row) -> float:
    """Return service + broker + PostgreSQL CPU ms per saga (what the saga cost the machine)."""
    return sum(row.get(k) or 0.0 for k in ("cpu_ms_per_saga", "broker_cpu_ms_per_saga",
                                            "postgres_cpu_ms_per_saga"))  # fmt: skip


def _thread_split(me: Row, base: Row) -> str:
    """Return ``me``'s Python-thread and librdkafka-thread CPU per saga against ``base``'s."""
    parts = []
    for key, label in (("python_cpu_ms_per_saga", "Python threads"),
                       ("rdkafka_cpu_ms_per_saga", "librdkafka threads")):  # fmt: skip
        mine, theirs = me.get(key), base.get(key)
        value = ratio(mine, theirs)
        if value is not None and mine is not None and theirs is not None:
            parts.append(f"{label} {mine:.3f} vs {theirs:.3f} ms = {value:.2f}x")
    return f" [{'; '.join(parts)}]" if parts else ""


def targets(rows: list[Row]) -> list[str]:
    """Return one line per cell and target of issue 17: met or missed, with the figure."""
    lines = []
    cells = sorted({(r["sagas"], r["partitions"]) for r in rows if r["impl"] not in KAFKA_FREE})
    for sagas, partitions in cells:
        cell = f"{sagas:,} sagas x {partitions} partition(s)"
        me = _find(rows, "choreo-confluent", sagas, partitions)
        ceiling = _find(rows, "ceiling", sagas, partitions)
        fast = _find(rows, "faststream", sagas, partitions)
        checks = []
        if me and ceiling:
            value = ratio(me["cpu_ms_per_saga"], ceiling["cpu_ms_per_saga"])
            check = _check("choreo service CPU/saga <= 1.1x ceiling", value, 1.1, higher=False)
            paired = _paired(me, ceiling, "cpu_ms_per_saga")
            if paired and me.get("repeats", 1) > 1:
                check += f" (repeat by repeat {paired['min']:.2f}-{paired['max']:.2f}x)"
            checks.append(check + _thread_split(me, ceiling))
        base = _find(rows, "choreo-confluent@base", sagas, partitions)
        if me and base:
            value = ratio(me["cpu_ms_per_saga"], base["cpu_ms_per_saga"])
            paired = _paired(me, base, "cpu_ms_per_saga")
            line = f"choreo service CPU/saga against the baseline tree's: {value}x"
            if paired and me.get("repeats", 1) > 1:
                line += f" (repeat by repeat {paired['min']:.2f}-{paired['max']:.2f}x)"
            if ceiling:
                line += (
                    f", the baseline tree's against the ceiling "
                    f"{ratio(base['cpu_ms_per_saga'], ceiling['cpu_ms_per_saga'])}x"
                )
            checks.append(line)
        if me and fast:
            value = ratio(me["cpu_ms_per_saga"], fast["cpu_ms_per_saga"])
            checks.append(_check("choreo CPU/saga <= 0.2x FastStream", value, 0.2, higher=False))
        pg = _find(rows, "choreo-postgres", sagas, partitions)
        dbos = _find(rows, "dbos-postgres", sagas, None)
        if pg and dbos:
            checks.append(
                _check(
                    "choreo-postgres sagas/s >= 10x dbos-postgres",
                    ratio(pg["sagas_per_s"], dbos["sagas_per_s"]),
                    10.0,
                    higher=True,
                )
            )
            checks.append(
                _check(
                    "dbos-postgres service CPU/saga >= 10x choreo-postgres",
                    ratio(dbos["cpu_ms_per_saga"], pg["cpu_ms_per_saga"]),
                    10.0,
                    higher=True,
                )
            )
            checks.append(
                _check(
                    "same, service + broker + PostgreSQL CPU",
                    ratio(total_cpu(dbos), total_cpu(pg)),
                    10.0,
                    higher=True,
                )
            )
        if checks:
            lines.append(f"- {cell}: " + "; ".join(checks))
    return lines


# --- tables ----------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _with_spread(row: Row, key: str, fmt: str) -> str:
    spread = (row.get("spread") or {}).get(key)
    if not spread:
        return "-"
    low, mid, high = (fmt.format(spread[k]) for k in ("min", "median", "max"))
    return f"{mid} ({low}-{high})"


def _status(row: Row) -> str:
    status = str(row.get("status", "?"))
    if row.get("failed_runs"):
        status = f"{row['failed_runs']}/{row['repeats']} runs failed: {status}"
    if row.get("state_check", "ok") != "ok":
        status += ", state mismatch"
    return status


def table(rows: list[Row], keep: Callable[[Row], bool] = lambda r: True) -> str:
    """Return the Markdown table of a run: medians (min-max over repeats) and ratios."""
    head = (
        "| implementation | sagas | partitions | replicas | sagas/s | x ceiling | x raw "
        "| service CPU ms/saga | x ceiling | x raw | broker CPU ms/saga | PostgreSQL CPU ms/saga "
        "| harness CPU ms/saga | p50 ms | p99 ms | busy cores | RSS MB | status |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        if not keep(r):
            continue
        partitions = "n/a" if r["impl"] in KAFKA_FREE else str(r["partitions"])
        if "sagas_per_s" not in r:
            lines.append(
                f"| {r['impl']} | {r['sagas']:,} | {partitions} | {r.get('replicas', 1)} "
                + "| - " * 13
                + f"| {_status(r)} |"
            )
            continue
        c, w = r.get("vs_ceiling", {}), r.get("vs_raw", {})
        lines.append(
            f"| {r['impl']} | {r['sagas']:,} | {partitions} | {r.get('replicas', 1)} "
            f"| {_with_spread(r, 'sagas_per_s', '{:,.0f}')} "
            f"| {_num(c.get('sagas_per_s'), '{:.2f}')} | {_num(w.get('sagas_per_s'), '{:.2f}')} "
            f"| {_with_spread(r, 'cpu_ms_per_saga', '{:.3f}')} "
            f"| {_num(c.get('cpu_ms_per_saga'), '{:.2f}')} "
            f"| {_num(w.get('cpu_ms_per_saga'), '{:.2f}')} "
            f"| {_with_spread(r, 'broker_cpu_ms_per_saga', '{:.3f}')} "
            f"| {_with_spread(r, 'postgres_cpu_ms_per_saga', '{:.3f}')} "
            f"| {_num(r.get('harness_cpu_ms_per_saga'))} "
            f"| {_num(r['latency_ms']['p50'], '{:,.0f}')} "
            f"| {_num(r['latency_ms']['p99'], '{:,.0f}')} "
            f"| {_num(r.get('machine_busy_cores'), '{:.2f}')} "
            f"| {_num(r.get('peak_rss_mb'), '{:.0f}')} | {_status(r)} |"
        )
    return head + "\n".join(lines) + "\n"


def _cores(row: Row, key: str) -> str:
    """Return how many cores ``key`` (ms per saga) kept busy at the row's sagas/s."""
    value = row.get(key)
    return "-" if value is None else f"{value * row['sagas_per_s'] / 1000.0:.2f}"


def scale_lines(rows: list[Row], partitions: int, cores: int | None = None) -> list[str]:
    """Return one line per implementation with replicas: sagas/s, CPU, cores used."""
    lines = []
    for impl in sorted({r["impl"] for r in rows if r.get("replicas", 1) > 1}):
        cells = sorted(
            (r for r in rows if r["impl"] == impl and r["partitions"] == partitions
             and "sagas_per_s" in r),
            key=lambda r: r.get("replicas", 1),
        )  # fmt: skip
        one = next((r for r in cells if r.get("replicas", 1) == 1), None)
        parts = [
            f"{r.get('replicas', 1)} replica(s): {r['sagas_per_s']:,.0f} sagas/s"
            + (f" ({ratio(r['sagas_per_s'], one['sagas_per_s']):.2f}x)" if one else "")
            + f", CPU per saga: services {_num(r['cpu_ms_per_saga'])} ms, broker "
            f"{_num(r.get('broker_cpu_ms_per_saga'))} ms; cores used: services "
            f"{_cores(r, 'cpu_ms_per_saga')}, broker {_cores(r, 'broker_cpu_ms_per_saga')}, "
            f"PostgreSQL {_cores(r, 'postgres_cpu_ms_per_saga')}, whole machine "
            f"{_num(r.get('machine_busy_cores'), '{:.2f}')} of {cores or '?'}"
            for r in cells
        ]
        lines.append(f"- {impl}, {partitions} partitions: " + "; ".join(parts))
    return lines


def _in_scale(row: Row, report: Row) -> bool:
    """Return True for a row of the horizontal-scale table."""
    method = report["method"]
    return bool(
        row["partitions"] == method.get("scale_partitions")
        and row["impl"] in method.get("scale_impls", ())
    )


def write_readme(readme: Path, report: Row, json_name: str) -> None:
    """Replace the generated part of the Peers section of ``readme``."""
    m = report["machine"]
    p = m["packages"]
    rows = report["results"]
    scale_p = report["method"].get("scale_partitions")
    generated = (
        f"{BEGIN}\n"
        f"Run of {report['started_at']} ({json_name}), {report['method']['repeats']} "
        f"interleaved repeats per cell, every service in its own process: {m['cpu']}, "
        f"{m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, confluent-kafka "
        f"{p.get('confluent-kafka')} (librdkafka {p.get('librdkafka')}), kafka-python "
        f"{p.get('kafka-python')}, FastStream {p.get('faststream')} (aiokafka "
        f"{p.get('aiokafka')}), DBOS {p.get('dbos')}, psycopg {p.get('psycopg')}, fastavro "
        f"{p.get('fastavro')}; {report['broker']}; {report.get('postgres') or 'no PostgreSQL'}."
        "\n\nMedian (min-max) over the repeats; ratios are of medians, against the same cell's "
        "`ceiling` and `raw`.\n\n"
        + table(rows, lambda r: r.get("replicas", 1) == 1)
        + "\nTargets (issue 17), per cell:\n\n"
        + "\n".join(targets(rows) or ["- no cell had the rows to compare"])
        + "\n"
        + (
            f"\nHorizontal scale ({scale_p} partitions, replicas per service):\n\n"
            + table(rows, lambda r: _in_scale(r, report))
            + "\n"
            + "\n".join(scale_lines(rows, scale_p, m["cores"]))
            + "\n"
            if scale_p
            else ""
        )
        + f"\n{END}"
    )
    text = readme.read_text() if readme.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: generated, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    readme.write_text(text)
