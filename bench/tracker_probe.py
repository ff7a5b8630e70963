"""Run ``choreo tracker run`` in this process and report where its memory goes.

    PYTHONPATH=TREE python bench/tracker_probe.py OUT.json [--tracemalloc] -- ARGS...

runs ``choreo tracker run ARGS`` from the choreo found on ``PYTHONPATH`` (so one copy of
this file measures any checkout) with a sampler thread. Every second it notes the RSS;
on ``SIGUSR1`` (sent by the benchmark once the group committed every event) it writes
``OUT.json`` with what the process holds at that moment, then the benchmark stops it:

- ``rss_mib`` / ``peak_rss_mib`` (``VmRSS``, ``VmHWM``);
- glibc's heap (``mallinfo2``, every arena): bytes in use, free inside the heap (held by
  the allocator, not by any object), and in ``mmap``ped chunks, and how many arenas;
- pymalloc: the bytes of its arenas and of the blocks in use (``sys._debugmallocstats``);
- with ``--tracemalloc``: what Python allocated, by file and line (slower: its rates are
  not the benchmark's);
- the trackers' own structures (``sys.getsizeof`` of every full entry's parts and every
  packed saga);
- ``rss_after_trim_mib``: the RSS after ``malloc_trim(0)``, i.e. what glibc gave back;
- ``rss_samples``: (seconds, RSS MiB, traced MiB, records held back by the alignment,
  sagas fed and not folded yet, sagas kept in full), about 60 of them over the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import io
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
LIBC.mallinfo2.restype = _MallInfo2
LIBC.fdopen.restype = ctypes.c_void_p
LIBC.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
LIBC.fclose.argtypes = [ctypes.c_void_p]
MIB = 1024 * 1024


def status_mib(key: str) -> float:
    """Return one ``/proc/self/status`` figure (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def malloc_figures() -> dict[str, float]:
    """Return glibc's heap in MiB (every arena): its size, in use, free, mmapped."""
    info = LIBC.mallinfo2()
    return {"heap_mib": round(info.arena / MIB, 1), "in_use_mib": round(info.uordblks / MIB, 1),
            "free_in_heap_mib": round(info.fordblks / MIB, 1),
            "mmapped_mib": round(info.hblkhd / MIB, 1)}


def arenas() -> int:
    """Return how many glibc arenas the process has (from ``malloc_info``'s XML)."""
    with tempfile.TemporaryFile("w+b") as out:
        libc_file = LIBC.fdopen(os.dup(out.fileno()), b"w")
        LIBC.malloc_info(0, libc_file)
        LIBC.fclose(libc_file)
        out.seek(0)
        return out.read().count(b"<heap nr=")


def pymalloc() -> dict[str, float]:
    """Return pymalloc's arena bytes and its used blocks' bytes (``sys._debugmallocstats``)."""
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found: dict[str, float] = {}
    for label, key in (("# bytes in allocated blocks", "used_blocks_mib"),
                       ("# bytes in available blocks", "free_blocks_in_used_pools_mib"),
                       (r"\d+ unused pools \* \d+ bytes", "unused_pools_mib"),
                       (r"\d+ arenas \* \d+ bytes/arena", "arenas_mib")):
        match = re.search(rf"^{label}\s*=\s*([\d,]+)", text, re.M)
        if match:
            found[key] = round(int(match.group(1).replace(",", "")) / MIB, 1)
    return found


def structures() -> dict[str, Any]:
    """Return the sizes of what the trackers of this process keep (``sys.getsizeof`` walks)."""
    from choreo.tracker.tracker import Tracker

    trackers = [o for o in gc.get_objects() if isinstance(o, Tracker)]
    full = packed = 0
    sizes = {"packed_bytes": 0, "packed_map": 0, "full_entries": 0, "full_events": 0,
             "event_id_text": 0, "cause_id_text": 0, "traces": 0}
    for tracker in trackers:
        with tracker._cond:
            sizes["packed_map"] += sys.getsizeof(tracker._packed)
            for cid, blob in tracker._packed.items():
                packed += 1
                sizes["packed_bytes"] += sys.getsizeof(blob) + sys.getsizeof(cid)
            for entry in tracker._full.values():
                full += 1
                sizes["full_entries"] += sys.getsizeof(entry) + sys.getsizeof(entry.events)
                for event_id, event in entry.events.items():
                    sizes["full_events"] += sys.getsizeof(event)
                    sizes["event_id_text"] += sys.getsizeof(event_id)
                    if event.causation_id is not None:
                        sizes["cause_id_text"] += sys.getsizeof(event.causation_id)
                if entry.trace is not None:
                    sizes["traces"] += sys.getsizeof(entry.trace) + sys.getsizeof(
                        entry.trace.events)
    return {"trackers": len(trackers), "full_sagas": full, "packed_sagas": packed,
            **{k: round(v / MIB, 1) for k, v in sizes.items()}}


def traced() -> dict[str, Any]:
    """Return tracemalloc's figures and its top lines (empty when not tracing)."""
    if not tracemalloc.is_tracing():
        return {}
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    top = [{"where": str(stat.traceback), "mib": round(stat.size / MIB, 1), "blocks": stat.count}
           for stat in snapshot.statistics("lineno")[:25]]
    return {"traced_mib": round(total / MIB, 1), "traced_now_mib": round(current / MIB, 1),
            "traced_peak_mib": round(peak / MIB, 1), "top": top}


class Sampler(threading.Thread):
    """Samples the RSS every second; writes the report once ``report`` is set."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True, name="probe")
        self.out = out
        self.report = threading.Event()
        self.samples: list[tuple[Any, ...]] = []
        self.member: Any = None
        self.begin = time.monotonic()

    def watch_members(self) -> None:
        """Note the tracker group member once it is made (``gc.freeze`` hides it from
        ``gc.get_objects``, so its constructor tells)."""
        from choreo.tracker import group

        made = group.TrackerGroupMember.__init__
        sampler = self

        def init(member: Any, *args: Any, **kwargs: Any) -> None:
            made(member, *args, **kwargs)
            sampler.member = member

        setattr(group.TrackerGroupMember, "__init__", init)  # noqa: B010 - a diagnostic hook

    def _member(self) -> Any:
        return self.member

    def run(self) -> None:
        while not self.report.wait(1.0):
            traced_mib = (round(tracemalloc.get_traced_memory()[0] / MIB, 1)
                          if tracemalloc.is_tracing() else None)
            member = self._member()
            held = waiting = full = 0
            if member is not None:  # read without locks: a diagnostic, off by a batch at most
                try:
                    held = member.alignment.held
                    for tracker in list(member.trackers.values()):
                        waiting += len(tracker._waiting)
                        full += len(tracker._full)
                except RuntimeError:  # a dict changed size while it was read: next second
                    pass
            self.samples.append((round(time.monotonic() - self.begin, 1), status_mib("VmRSS"),
                                 traced_mib, held, waiting, full))
        gc.collect()
        row: dict[str, Any] = {
            "rss_mib": status_mib("VmRSS"), "peak_rss_mib": status_mib("VmHWM"),
            "malloc": malloc_figures(), "malloc_arenas": arenas(), "pymalloc": pymalloc(),
            "structures": structures(), "threads": threading.active_count(),
        }
        row.update(traced())
        LIBC.malloc_trim(0)
        row["rss_after_trim_mib"] = status_mib("VmRSS")
        row["malloc_after_trim"] = malloc_figures()
        row["rss_samples"] = self.samples[:: max(1, len(self.samples) // 60)]
        self.out.write_text(json.dumps(row, indent=1) + "\n")


def main() -> None:
    """Run ``choreo tracker run`` with the arguments after ``--`` under the sampler."""
    argv = sys.argv[1:]
    out = Path(argv.pop(0))
    if argv and argv[0] == "--tracemalloc":
        argv.pop(0)
        tracemalloc.start(1)
    if argv and argv[0] == "--":
        argv.pop(0)
    sampler = Sampler(out)
    signal.signal(signal.SIGUSR1, lambda *_: sampler.report.set())
    sampler.watch_members()
    sampler.start()
    from choreo.cli import main as choreo_main

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            choreo_main(["tracker", "run", *argv], standalone_mode=False)
        finally:
            sampler.report.set()
            sampler.join(120)


if __name__ == "__main__":
    main()
