"""CPU time of another process (the Kafka broker's JVM, a service replica) read from /proc.

Benchmarks report CPU per saga for processes they did not start in-process: the
broker started by ``scripts/kafka_broker.py`` and services run one per process. Linux
only; every figure is user + system time of all the process's threads, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds used so far by every thread of process ``pid``.

    Raises ``ProcessLookupError`` when the process is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """Return CPU seconds of process ``pid``, its live children and its reaped children.

    For servers that fork a process per connection (PostgreSQL's postmaster): the
    children alive now are read one by one, those that exited and were waited for are in
    the parent's ``cutime`` + ``cstime``, so a child that ends between two readings moves
    from one sum to the other without being lost. Grandchildren are not counted.
    Raises ``ProcessLookupError`` when ``pid`` is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError as exc:
        raise ProcessLookupError(pid) from exc
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(f) for f in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = (entry / "stat").read_text()
        except OSError:
            continue
        rest = child[child.rindex(")") + 2 :].split()
        if int(rest[1]) == pid:  # field 4: the parent's pid
            total += (int(rest[11]) + int(rest[12])) / _TICKS
    return total


def peak_rss_mb(pid: int) -> float | None:
    """Return the peak resident set size (``VmHWM``) of process ``pid`` in MiB, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def machine_cpu_seconds() -> float:
    """Return the CPU seconds every core of this machine spent busy since boot (/proc/stat).

    Busy is everything but idle and iowait, for all processes, the other users' included.
    """
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICKS


class CpuMeter:
    """Measure the CPU seconds a process spends between ``start()`` and ``stop()``.

    ``tree=True`` counts its children too (:func:`tree_cpu_seconds`).
    """

    def __init__(self, pid: int, *, tree: bool = False) -> None:
        self.pid = pid
        self._read = tree_cpu_seconds if tree else process_cpu_seconds
        self._start: float | None = None

    def start(self) -> None:
        """Record the process's CPU time now."""
        self._start = self._read(self.pid)

    def stop(self) -> float:
        """Return the CPU seconds spent since ``start()``."""
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        return self._read(self.pid) - self._start
