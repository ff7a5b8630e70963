"""What the listing commands share: ``--json``, the business-key options, JSON documents.

``--json`` prints one JSON document on standard output instead of tables (ASCII only:
every control character of the data is a ``\\u`` escape, so it is safe in a terminal and
for ``jq``). The documents reuse the web viewer's views (:mod:`choreo.viewer.api`), so a
saga row has the same fields in ``choreo sagas --json`` as in ``/api/sagas``.

``--where FIELD=VALUE`` (repeatable, all must hold) and ``--find VALUE`` (any field or
header) select sagas by business key (see :mod:`choreo.tracker.keys`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from choreo.tracker.keys import KeyIndex, KeyQuery

__all__ = [
    "echo_json",
    "json_option",
    "key_index",
    "key_options",
    "key_query",
    "sagas_document",
    "verify_document",
]

F = TypeVar("F", bound=Callable[..., Any])

_MAX_KEY_SAGAS = 1_000_000
"""The most matching sagas a one-shot key search keeps (it keeps only matches)."""


def json_option() -> Callable[[F], F]:
    """Return the ``--json`` flag; the command gets ``as_json``."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout instead of tables (for scripts and jq).",
    )


def echo_json(value: object) -> None:
    """Print ``value`` as indented ASCII JSON (payload values json cannot encode converted)."""
    from choreo.safety.jsonsafe import dumps
    from choreo.viewer.api import json_default

    click.echo(dumps(value, default=json_default, indent=2, html_safe=False))


def key_options(func: F) -> F:
    """Add ``--where FIELD=VALUE`` (repeatable) and ``--find VALUE`` (``where``, ``find``)."""

    where = click.option(
        "--where",
        "where",
        multiple=True,
        metavar="FIELD=VALUE",
        help=(
            "Only sagas with an event whose payload field or header FIELD is VALUE (e.g."
            " order_id=123 or customer.email=alice@example.com; 'email' also matches"
            " customer.email; case is ignored). Repeat to require several. Payload fields"
            " need --schemas."
        ),
    )
    find = click.option(
        "--find",
        metavar="VALUE",
        help=(
            "Only sagas with an event holding VALUE in any payload field or header (exact"
            " value, case ignored), e.g. --find alice@example.com."
        ),
    )
    return where(find(func))


def key_query(where: Sequence[str], find: str | None) -> KeyQuery:
    """Return the business-key query of ``--where``/``--find``; a usage error if malformed."""
    try:
        return KeyQuery.of(where, find)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--where/--find") from None


def key_index(query: KeyQuery, tracker: Any, *, has_schemas: bool) -> KeyIndex | None:
    """Return an index keeping only ``query``'s values (None without a query).

    Warns on stderr when payloads cannot be decoded (no ``--schemas``/``--registry``),
    since only headers are searched then.
    """
    if not query:
        return None
    if tracker.decode is None and not has_schemas:
        click.echo(
            "note: without --schemas DIR (or --registry URL) payloads cannot be decoded, so"
            " --where/--find look at record headers only",
            err=True,
        )
    return KeyIndex(decode=tracker.decode, max_sagas=_MAX_KEY_SAGAS, only_values=query.values)


def sagas_document(
    shown: Sequence[Any],
    *,
    matching: int,
    tracker: Any,
    read: int,
    keys: KeyIndex | None = None,
    query: KeyQuery | None = None,
) -> dict[str, Any]:
    """Return the JSON document of ``choreo sagas``: the rows shown, counts and records."""
    from choreo.viewer.api import records_view, saga_row

    rows = []
    for trace in shown:
        row = saga_row(trace)
        if keys is not None and query is not None:
            row["matched_fields"] = keys.fields_of(trace.correlation_id, query)
        rows.append(row)
    counts = tracker.counts()
    return {
        "matching": matching,
        "shown": len(rows),
        "sagas": rows,
        "counts": {status.value: count for status, count in counts.items()},
        "total": tracker.total(),
        "records": {"read": read, **records_view(tracker.stats)},
    }


def verify_document(report: Any, tracker: Any, *, read: int) -> dict[str, Any]:
    """Return the JSON document of ``choreo verify``: verdict, violations, sagas needing care."""
    from choreo.viewer.api import records_view

    return {
        "ok": report.ok,
        "summary": report.summary(),
        "sagas": report.sagas,
        "events": report.events,
        "violations": [
            {
                "correlation_id": finding.correlation_id,
                "saga": finding.saga,
                "code": finding.violation.code,
                "message": finding.violation.message,
                "event_id": finding.violation.event_id,
            }
            for finding in report.findings
        ],
        "compensation_failed": list(report.compensation_failed),
        "stuck": list(report.stuck),
        "records": {"read": read, **records_view(tracker.stats)},
    }
