"""Business keys: which sagas carry a value in a payload field or a record header.

An operator looks for "the saga of order 123" or "the sagas of alice@example.com", not
for a correlation id. :class:`KeyIndex` watches the same records as a tracker and keeps,
per value, the fields that held it and the sagas (correlation ids) whose records did;
:class:`KeyQuery` asks for ``field=value`` pairs (all must hold) and/or one value in any
field (``find``). ``choreo sagas --where order_id=123 --find alice@example.com`` and the
web viewer's search box (``order_id=123``, or any text) answer from it.

What is indexed, per record with a correlation id header:

- every header except choreo's own (``choreo-*``) and the trace context, by its name in
  lower case (e.g. ``x-tenant``);
- with ``decode`` (the tracker's payload decoder), every scalar field of the payload, by
  its dotted path (``customer.email``; a list's items under the list's path,
  ``items.sku``).

Matching ignores case and the spaces around a value. A field name matches a path equal
to it or ending with ``.`` and it: ``email`` finds ``customer.email``. A value matches
exactly (``123`` does not find ``1234``).

Bounded: at most :data:`MAX_FIELDS` fields per record, :data:`MAX_DEPTH` levels of
nesting, :data:`MAX_LIST_ITEMS` items per list; a value longer than
:data:`MAX_VALUE_CHARS`, a name longer than :data:`MAX_NAME_CHARS` or a value that is not
valid UTF-8 is not indexed. At most ``max_sagas`` sagas are indexed; past that the saga
whose records were seen least recently is forgotten first (:attr:`KeyIndex.forgotten`
counts them, so an answer can say it may be incomplete). A saga whose events hold a dozen
distinct keys costs about 5 KB, so the default of 10 000 sagas is about 50 MB; indexing
decodes every payload once more (tens of thousands of records per second per core). With
``only_values`` only those values are kept (a one-shot query over a whole log holds its
answer, not the log).

Thread-safe: one thread may :meth:`~KeyIndex.observe` while others ask.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from choreo.model.envelope import HEADER_PREFIX, Header
from choreo.tracker.accounting import MAX_HEADER_BYTES
from choreo.transports.base import Record

__all__ = [
    "DEFAULT_MAX_SAGAS",
    "KeyIndex",
    "KeyQuery",
    "normal",
    "parse_where",
]

logger = logging.getLogger(__name__)

MAX_FIELDS: Final = 64
"""The most fields (payload and headers) indexed per record."""
MAX_DEPTH: Final = 4
"""How deep nested records and lists of a payload are followed."""
MAX_LIST_ITEMS: Final = 16
"""The most items of one list indexed."""
MAX_VALUE_CHARS: Final = 200
"""The longest value indexed (and searched for)."""
MAX_NAME_CHARS: Final = 100
"""The longest field path or header name indexed (and searched for)."""
MAX_CONDITIONS: Final = 8
"""The most ``field=value`` conditions one query may hold."""
DEFAULT_MAX_SAGAS: Final = 10_000
"""Sagas indexed by default; the least recently seen is forgotten first."""

_SKIPPED_HEADERS: Final = frozenset({Header.TRACEPARENT, "tracestate"})


def normal(value: str) -> str:
    """Return ``value`` as it is matched: without surrounding spaces, case folded."""
    return value.strip().casefold()


def parse_where(text: str) -> tuple[str, str]:
    """Return ``(field, value)`` of a ``FIELD=VALUE`` condition, both normalised.

    Raises ``ValueError`` saying what to write when there is no ``=``, the field is empty,
    or either part is too long.
    """
    field, sep, value = text.partition("=")
    field, value = normal(field), normal(value)
    if not sep or not field:
        raise ValueError(
            f"{text[:MAX_NAME_CHARS]!r} is not FIELD=VALUE: write e.g. order_id=123 (a payload "
            "field or a header name, then = and the value)"
        )
    if len(field) > MAX_NAME_CHARS or len(value) > MAX_VALUE_CHARS:
        raise ValueError(
            f"a field name has at most {MAX_NAME_CHARS} characters and a value at most "
            f"{MAX_VALUE_CHARS}"
        )
    return field, value


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """Sagas whose records hold every ``where`` pair and, if given, ``find`` in any field.

    Field names and values are normalised (see :func:`normal`); build one with
    :meth:`of` to have them checked.
    """

    where: tuple[tuple[str, str], ...] = ()
    find: str | None = None

    @classmethod
    def of(cls, where: Iterable[str] = (), find: str | None = None) -> KeyQuery:
        """Return the query of ``FIELD=VALUE`` texts and a free value; ``ValueError`` if bad."""
        pairs = tuple(parse_where(text) for text in where)
        if len(pairs) > MAX_CONDITIONS:
            raise ValueError(f"at most {MAX_CONDITIONS} FIELD=VALUE conditions")
        wanted = normal(find) if find is not None else None
        if wanted is not None and len(wanted) > MAX_VALUE_CHARS:
            raise ValueError(f"a value to find has at most {MAX_VALUE_CHARS} characters")
        return cls(pairs, wanted or None)

    @property
    def values(self) -> frozenset[str]:
        """Return every value the query looks for."""
        found = {value for _, value in self.where}
        if self.find:
            found.add(self.find)
        return frozenset(found)

    def __bool__(self) -> bool:
        return bool(self.where or self.find)


_MAX_CHILDREN: Final = MAX_FIELDS * 2
"""The most fields of one record (a mapping) looked at."""
_SCALARS: Final = frozenset({str, bool, int, float})


def _scalar(value: object) -> str | None:
    """Return a payload value as indexed text, or None for what is not a scalar."""
    kind = type(value)
    if kind is str:
        text = normal(value)  # type: ignore[arg-type]
    elif kind is bool:
        return "true" if value else "false"
    elif kind is int or kind is float:
        text = str(value)
    else:
        return None
    return text if text and len(text) <= MAX_VALUE_CHARS else None


def _flatten(value: object, limit: int) -> list[tuple[str, str]]:
    """Return ``(path, text)`` of at most ``limit`` scalars of a decoded payload, outer
    fields first (bounded, see the module)."""
    found: list[tuple[str, str]] = []
    queue: list[tuple[object, str, int]] = [(value, "", 0)]
    at = 0
    while at < len(queue) and len(found) < limit:
        item, path, depth = queue[at]
        at += 1
        kind = type(item)
        if kind in _SCALARS:
            text = _scalar(item) if path and len(path) <= MAX_NAME_CHARS else None
            if text is not None:
                found.append((path.casefold(), text))
        elif depth >= MAX_DEPTH:
            continue
        elif kind is dict or isinstance(item, Mapping):
            queue.extend(
                (child, f"{path}.{name}" if path else name, depth + 1)
                for name, child in islice(item.items(), _MAX_CHILDREN)  # type: ignore[attr-defined]
                if type(name) is str
            )
        elif kind is list or kind is tuple:
            queue.extend((child, path, depth + 1) for child in item[:MAX_LIST_ITEMS])  # type: ignore[index]
    return found


def _field_matches(path: str, field: str) -> bool:
    return path == field or path.endswith("." + field)


class KeyIndex:
    """Values of payload fields and headers -> the sagas that carried them (see the module).

    ``decode`` turns a payload's bytes into a dict (or a ``(schema, dict)`` pair), as a
    tracker's ``decode`` does; without it only headers are indexed.
    """

    def __init__(
        self,
        *,
        decode: Callable[[bytes], Any] | None = None,
        max_sagas: int = DEFAULT_MAX_SAGAS,
        only_values: Collection[str] | None = None,
    ) -> None:
        if max_sagas < 1:
            raise ValueError("max_sagas must be >= 1")
        self.decode = decode
        self.max_sagas = max_sagas
        self.only_values = (
            frozenset(normal(v) for v in only_values) if only_values is not None else None
        )
        self.forgotten = 0
        """How many sagas were forgotten to stay within ``max_sagas``."""
        self._lock = threading.Lock()
        self._by_value: dict[str, dict[str, str | set[str]]] = {}
        """value -> field path -> the correlation id holding it (a set when several do)"""
        self._by_saga: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        """Return how many sagas are indexed."""
        with self._lock:
            return len(self._by_saga)

    def observe(self, records: Iterable[Record]) -> None:
        """Index the business keys of ``records`` (those without a correlation id are skipped)."""
        for record in records:
            found = self._keys_of(record)
            if found is None:
                continue
            cid, keys = found
            with self._lock:
                self._add(cid, keys)

    def tee(self, records: Iterable[Record]) -> Iterator[Record]:
        """Yield ``records`` unchanged, indexing each on the way (to feed a tracker and this)."""
        for record in records:
            self.observe((record,))
            yield record

    def _keys_of(self, record: Record) -> tuple[str, set[tuple[str, str]]] | None:
        headers = dict(record.headers)
        cid_raw = headers.get(Header.CORRELATION_ID)
        if not cid_raw or len(cid_raw) > MAX_HEADER_BYTES:
            return None
        try:
            cid = cid_raw.decode()
        except UnicodeDecodeError:
            return None
        keys: set[tuple[str, str]] = set()
        for name, raw in headers.items():
            if len(keys) >= MAX_FIELDS:
                break
            key = _header_key(name, raw)
            if key is not None:
                keys.add(key)
        if self.decode is not None and record.value is not None:
            room = MAX_FIELDS - len(keys)
            keys.update((text, path) for path, text in _flatten(self._decoded(record.value), room))
        if self.only_values is not None:
            keys = {key for key in keys if key[0] in self.only_values}
        return cid, keys

    def _decoded(self, value: bytes) -> object:
        assert self.decode is not None
        try:
            decoded = self.decode(value)
        except Exception:  # any payload the decoder rejects is simply not indexed
            logger.debug("a payload does not decode; its fields are not indexed", exc_info=True)
            return None
        if isinstance(decoded, tuple) and len(decoded) == 2:
            decoded = decoded[1]
        return decoded

    def _add(self, cid: str, keys: set[tuple[str, str]]) -> None:
        known = self._by_saga.get(cid)
        if known is None:
            if not keys:
                return
            known = self._by_saga[cid] = set()
        else:
            self._by_saga.move_to_end(cid)
        by_value = self._by_value
        for value, path in keys - known:
            fields = by_value.get(value)
            if fields is None:
                by_value[value] = {sys.intern(path): cid}  # one saga: its id, not a set
                continue
            cids = fields.get(path)
            if cids is None:
                fields[sys.intern(path)] = cid
            elif isinstance(cids, str):
                fields[path] = {cids, cid}
            else:
                cids.add(cid)
        known |= keys
        while len(self._by_saga) > self.max_sagas:
            self._forget(*self._by_saga.popitem(last=False))

    def _forget(self, cid: str, keys: set[tuple[str, str]]) -> None:
        self.forgotten += 1
        for value, path in keys:
            fields = self._by_value.get(value)
            if fields is None:
                continue
            cids = fields.get(path)
            if cids == cid:
                del fields[path]
            elif isinstance(cids, set):
                cids.discard(cid)
                if len(cids) == 1:
                    fields[path] = next(iter(cids))
            if not fields:
                del self._by_value[value]

    def _with_value(self, value: str, field: str | None) -> set[str]:
        fields = self._by_value.get(value, {})
        found: set[str] = set()
        for path, cids in fields.items():
            if field is None or _field_matches(path, field):
                if isinstance(cids, str):
                    found.add(cids)
                else:
                    found |= cids
        return found

    def matching(self, query: KeyQuery) -> set[str]:
        """Return the correlation ids of the sagas matching every part of ``query``."""
        if not query:
            return set()
        with self._lock:
            result: set[str] | None = None
            parts: list[tuple[str, str | None]] = [(v, f) for f, v in query.where]
            if query.find:
                parts.append((query.find, None))
            for value, field in parts:
                cids = self._with_value(value, field)
                result = cids if result is None else result & cids
                if not result:
                    return set()
            return result or set()

    def fields_of(self, correlation_id: str, query: KeyQuery) -> list[str]:
        """Return the fields of one saga that hold a value ``query`` looks for, sorted."""
        values = query.values
        with self._lock:
            keys = self._by_saga.get(correlation_id, set())
            return sorted({path for value, path in keys if value in values})


def _header_key(name: str, raw: bytes | None) -> tuple[str, str] | None:
    """Return ``(value, name)`` of a business header, or None for choreo's own and bad ones."""
    lowered = name.lower()
    if lowered.startswith(HEADER_PREFIX) or lowered in _SKIPPED_HEADERS or raw is None:
        return None
    if len(lowered) > MAX_NAME_CHARS or len(raw) > MAX_VALUE_CHARS * 4:
        return None
    try:
        text = normal(raw.decode())
    except UnicodeDecodeError:
        return None
    if not text or len(text) > MAX_VALUE_CHARS:
        return None
    return text, lowered
