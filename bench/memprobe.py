"""An opt-in memory probe for a benchmark service process: what grows, Python or native.

    probe = MemProbe(Path("out"), "inventory", roots={"worker": worker, "states": states})
    probe.start()          # tracemalloc with 25 frames, a sample every ``period`` s
    ...                    # at ``baseline_s`` a first snapshot is dumped to out/
    probe.finish()         # a last sample and snapshot (on SIGTERM, before the worker closes)
    compare(Path("out"), "inventory")   # afterwards: the top differences by traceback

Each sample (one JSON line in ``<name>-samples.jsonl``) holds:

- the process's RSS, split as the kernel reports it (anonymous, file-backed, shared
  memory: SQLite's ``-shm`` index is a shared file mapping);
- tracemalloc's traced total (every block Python allocates through its allocators) and
  tracemalloc's own overhead, so that ``rss - traced - overhead`` is what Python does not
  see: librdkafka's buffers, SQLite's page cache, the interpreter's code, and the slack
  of pymalloc's arenas and glibc's heap;
- glibc's ``mallinfo2`` (bytes in use and free in the malloc heap: free bytes that grow
  while in-use bytes do not are fragmentation, not a leak);
- SQLite's own allocator counters (``sqlite3_status64``: memory in use, page-cache
  overflow, i.e. page cache taken from malloc);
- the gc-tracked objects counted by type (the most numerous);
- the length of every dict, list, set and deque reachable from ``roots`` through
  attributes (a few levels deep), and of the module-level containers and ``lru_cache``s
  of ``choreo.*`` modules: an id cache, dedupe set, metrics table, outbox or delivery map
  that grows per event shows up here by its attribute path.

:func:`compare` writes ``<name>-top.txt``: the ``compare_to(..., "traceback")`` top
differences between the baseline and the last snapshot, largest growth first.
tracemalloc slows allocation down, so a profiled run's latency and CPU are not the
benchmark's figures.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import logging
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

_log = logging.getLogger(__name__)
_CONTAINERS: Final = (dict, list, set, frozenset, collections.deque)
_MAX_DEPTH: Final = 5
_SMALL: Final = 16  # a container this small is looked into (hooks, per-partition maps)
_TOP_TYPES: Final = 25


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


def _libsqlite() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_status64.argtypes = [
            ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int64),
            ctypes.c_int]
        return lib
    except (OSError, AttributeError):
        return None


_LIBC: Final = _libc()
_SQLITE: Final = _libsqlite()
_SQLITE_STATUS: Final = {"memory_used": 0, "pagecache_overflow": 2, "malloc_count": 9}


def proc_status() -> dict[str, int]:
    """Return this process's RSS and its parts in KiB (``/proc/self/status``)."""
    wanted = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            found[key] = int(rest.split()[0])
    return found


def malloc_info() -> dict[str, int]:
    """Return glibc's heap figures in bytes (in use, free, mmapped), or {} without glibc."""
    if _LIBC is None:
        return {}
    info = _LIBC.mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks,
            "mmapped": info.hblkhd, "top_free": info.keepcost}


def sqlite_status() -> dict[str, int]:
    """Return SQLite's process-wide allocator counters (current values, bytes or counts)."""
    if _SQLITE is None:
        return {}
    found = {}
    for name, op in _SQLITE_STATUS.items():
        current, high = ctypes.c_int64(), ctypes.c_int64()
        if _SQLITE.sqlite3_status64(op, ctypes.byref(current), ctypes.byref(high), 0) == 0:
            found[name] = current.value
    return found


def type_counts() -> dict[str, int]:
    """Return the most numerous gc-tracked object types and how many of each exist."""
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return dict(counts.most_common(_TOP_TYPES))


def _fields(obj: object) -> Iterator[tuple[str, object]]:
    """Yield an object's attributes (``__dict__`` and ``__slots__``)."""
    seen = set()
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if isinstance(slot, str) and slot not in seen and hasattr(obj, slot):
                seen.add(slot)
                yield slot, getattr(obj, slot)
    for key, value in list(getattr(obj, "__dict__", {}).items()):
        if key not in seen:
            yield key, value


def container_sizes(roots: Mapping[str, object]) -> dict[str, int]:
    """Return the length of each container reachable from ``roots``, by attribute path."""
    sizes: dict[str, int] = {}
    visited: set[int] = set()

    def walk(path: str, obj: object, depth: int) -> None:
        if id(obj) in visited or depth > _MAX_DEPTH or isinstance(obj, (str, bytes, type)):
            return
        visited.add(id(obj))
        if isinstance(obj, _CONTAINERS):
            sizes[path] = len(obj)
            if len(obj) <= _SMALL:  # copied first: the worker's thread may change it
                items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj))
                for key, value in items:
                    walk(f"{path}[{str(key)[:40]}]", value, depth + 1)
            return
        if callable(obj) and hasattr(obj, "cache_info"):
            sizes[path + ".cache"] = obj.cache_info().currsize
        if type(obj).__module__.split(".")[0] in ("builtins", "logging", "threading"):
            return
        for name, value in _fields(obj):
            walk(f"{path}.{name}", value, depth + 1)

    for name, root in roots.items():
        walk(name, root, 0)
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] != "choreo":
            continue
        for name, value in list(vars(module).items()):
            if isinstance(value, _CONTAINERS) and not name.startswith("__"):
                sizes[f"{module_name}:{name}"] = len(value)
            elif callable(value) and hasattr(value, "cache_info"):
                sizes[f"{module_name}:{name}.cache"] = value.cache_info().currsize
    manager = logging.Logger.manager
    sizes["logging.loggers"] = len(manager.loggerDict)
    sizes["logging.handlers"] = sum(
        len(lg.handlers) for lg in [logging.getLogger(), *manager.loggerDict.values()]
        if isinstance(lg, logging.Logger))
    return sizes


class MemProbe(threading.Thread):
    """Samples memory every ``period`` s; snapshots tracemalloc at ``baseline_s`` and at finish."""

    def __init__(self, out_dir: Path, name: str, *, roots: Mapping[str, object],
                 baseline_s: float = 120.0, period: float = 30.0, frames: int = 25) -> None:
        super().__init__(name="memprobe", daemon=True)
        self.out_dir, self.label, self.roots = out_dir, name, roots
        self.baseline_s, self.period, self.frames = baseline_s, period, frames
        self.begin = time.monotonic()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._baseline: Path | None = None
        out_dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = out_dir / f"{name}-samples.jsonl"

    def start(self) -> None:
        """Start tracing allocations and the sampling thread."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        super().start()

    def sample(self, tag: str = "") -> dict[str, Any]:
        """Take one sample now and append it to the samples file."""
        traced, peak = tracemalloc.get_traced_memory()
        status = proc_status()
        overhead = tracemalloc.get_tracemalloc_memory()
        row = {
            "t_s": round(time.monotonic() - self.begin, 1), "tag": tag,
            "rss_kb": status, "traced_kb": traced // 1024, "traced_peak_kb": peak // 1024,
            "tracemalloc_overhead_kb": overhead // 1024,
            "untraced_kb": status.get("VmRSS", 0) - (traced + overhead) // 1024,
            "allocated_blocks": sys.getallocatedblocks(),
            "malloc": malloc_info(), "sqlite": sqlite_status(),
            "gc_types": type_counts(), "containers": container_sizes(self.roots),
        }
        with self._lock, self.samples_path.open("a") as out:
            out.write(json.dumps(row) + "\n")
        return row

    def snapshot(self, tag: str) -> Path:
        """Dump a tracemalloc snapshot (without the probe's own frames) and return its path."""
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__),
             tracemalloc.Filter(False, __file__)])
        path = self.out_dir / f"{self.label}-{tag}.tmsnap"
        snap.dump(str(path))
        return path

    def run(self) -> None:
        """Sample every ``period`` s; dump the baseline snapshot once ``baseline_s`` passed."""
        self.sample("start")
        while not self.stopping.wait(self.period):
            try:
                if self._baseline is None and time.monotonic() - self.begin >= self.baseline_s:
                    self._baseline = self.snapshot("baseline")
                    self.sample("baseline")
                else:
                    self.sample()
            except RuntimeError as exc:  # a container changed size while it was read
                _log.warning("memory sample skipped: %s", exc)

    def finish(self) -> None:
        """Stop sampling; take the last sample and dump the last snapshot.

        :func:`compare` (run once the process is gone: it takes seconds) writes the
        differences.
        """
        self.stopping.set()
        self.join(self.period + 30)
        self.sample("end")
        self.snapshot("end")


def compare(out_dir: Path, label: str, top: int = 40) -> Path | None:
    """Write ``<label>-top.txt`` from the baseline and end snapshots in ``out_dir``."""
    first, last = out_dir / f"{label}-baseline.tmsnap", out_dir / f"{label}-end.tmsnap"
    if not (first.exists() and last.exists()):
        return None
    out = out_dir / f"{label}-top.txt"
    write_top(out, tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last)),
              top)
    return out


def write_top(path: Path, first: tracemalloc.Snapshot, last: tracemalloc.Snapshot,
              top: int) -> None:
    """Write the ``top`` largest differences between two snapshots, grouped by traceback."""
    diffs = last.compare_to(first, "traceback")
    lines = [f"traced: {sum(s.size for s in first.statistics('filename')) / 1e6:.2f} MB -> "
             f"{sum(s.size for s in last.statistics('filename')) / 1e6:.2f} MB",
             f"net growth of the top {top}: "
             f"{sum(d.size_diff for d in diffs[:top]) / 1e6:.2f} MB", ""]
    for diff in diffs[:top]:
        lines.append(f"{diff.size_diff / 1024:+.1f} KiB ({diff.count_diff:+d} blocks), "
                     f"now {diff.size / 1024:.1f} KiB in {diff.count} blocks")
        frames = diff.traceback.format(limit=12, most_recent_first=True)
        lines.extend(f"    {line}" for line in frames)
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Compare the baseline and end snapshots of every label in a directory."""
    out_dir = Path((argv or sys.argv[1:])[0])
    for path in sorted(out_dir.glob("*-end.tmsnap")):
        written = compare(out_dir, path.name.removesuffix("-end.tmsnap"))
        if written is not None:
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
