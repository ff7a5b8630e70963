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


class CpuMeter:
    """Measure the CPU seconds a process spends between ``start()`` and ``stop()``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start: float | None = None

    def start(self) -> None:
        """Record the process's CPU time now."""
        self._start = process_cpu_seconds(self.pid)

    def stop(self) -> float:
        """Return the CPU seconds spent since ``start()``."""
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        return process_cpu_seconds(self.pid) - self._start
