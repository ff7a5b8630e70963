"""Summarise py-spy's raw (collapsed) stacks: where one implementation's time went.

py-spy ``record --format raw --threads`` writes one line per distinct stack:
``thread (TID): NAME;frame;frame;... COUNT``, each frame ``function (file:line)``, the
innermost last. A call into a C extension (librdkafka's ``consume``, fastavro's reader)
shows as the Python frame that made it, so "self" time of ``ConfluentConsumer.poll``
includes the native ``consume`` it waits in.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?::\s*(?P<name>.*))?$")


def _split(line: str) -> tuple[str, list[str], int] | None:
    """Return (thread name, frames, count) of one raw line, or None for a blank line."""
    line = line.rstrip()
    if not line:
        return None
    stack, _, count = line.rpartition(" ")
    parts = stack.split(";")
    thread = "?"
    head = _THREAD.match(parts[0])
    if head is not None:
        thread = head["name"] or head["tid"]
        parts = parts[1:]
    elif parts and parts[0].startswith("process "):
        parts = parts[1:]
        head = _THREAD.match(parts[0]) if parts else None
        if head is not None:
            thread = head["name"] or head["tid"]
            parts = parts[1:]
    return thread, parts, int(count)


def _function(frame: str) -> tuple[str, str]:
    """Return (function with its file, file) of one frame, line numbers dropped."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "?"
    return f"{match['func']} ({match['file']})", match["file"]


HARNESS_THREADS = ("MainThread", "collector")
"""The harness's own threads (injector, waiting, collector): counted, not analysed."""


def summarize(
    path: Path, top: int = 30, exclude: tuple[str, ...] = HARNESS_THREADS
) -> dict[str, Any]:
    """Return samples per thread, then the implementation's threads' top functions.

    Shares are percentages of the samples of the threads not in ``exclude``: by function
    (self: the innermost frame; inclusive: anywhere on the stack) and by file (self).
    """
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        parsed = _split(line)
        if parsed is None:
            continue
        thread, frames, count = parsed
        threads[thread] += count
        if thread in exclude or not frames:
            continue
        total += count
        leaf, leaf_file = _function(frames[-1])
        own[leaf] += count
        files[leaf_file] += count
        for name in {_function(f)[0] for f in frames}:
            inclusive[name] += count

    def share(counter: Counter[str], of: int = total) -> list[list[Any]]:
        return [[name, round(100.0 * n / max(of, 1), 1)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "by_thread_pct": share(threads, sum(threads.values())),
        "top_self": share(own),
        "top_inclusive": share(inclusive),
        "self_by_file": share(files),
    }
