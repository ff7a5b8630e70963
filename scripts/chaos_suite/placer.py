"""The order placer: ``python -m services.placer`` runs, chunk after chunk, on a background thread.

Each chunk is one placer process (``--count``, a seed of its own, so order ids never repeat
across chunks); the order rows and their start events are written through the order
service's store, as a real front end would. Between chunks the placer waits ``gap``
seconds, and while :attr:`Placer.hold` is set (the broker is down) it waits. A chunk whose
process fails is retried with the same seed (recorded in :attr:`Placer.retries`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from services.catalog import sample_orders

from .fleet import die_with_parent


class Placer:
    """Places ``total`` orders in ``chunks`` placer processes, on its own thread."""

    def __init__(
        self,
        *,
        total: int,
        chunks: int,
        gap: float,
        seed: int,
        bootstrap: Callable[[], str],
        store_args: Callable[[], list[str]],
        prefix: str,
        schemas: Path,
        workdir: Path,
        env: Mapping[str, str],
        cwd: Path,
    ) -> None:
        self.total = total
        self.chunks = max(1, min(chunks, total))
        self.gap = gap
        self.seed = seed
        self.bootstrap = bootstrap
        self.store_args = store_args
        self.prefix = prefix
        self.schemas = schemas
        self.workdir = workdir
        self.env = env
        self.cwd = cwd
        self.placed: list[str] = []
        self.retries = 0
        self.failures: list[str] = []
        self.hold = threading.Event()
        self.done = threading.Event()
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="chaos-placer", daemon=True)

    def start(self) -> None:
        """Start placing on the background thread."""
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the last chunk."""
        self._thread.join(timeout)

    def count(self) -> int:
        """Return how many orders were placed so far."""
        with self._lock:
            return len(self.placed)

    def _sizes(self) -> list[int]:
        base, extra = divmod(self.total, self.chunks)
        return [base + (1 if i < extra else 0) for i in range(self.chunks)]

    def _run(self) -> None:
        started = time.monotonic()
        try:
            for number, size in enumerate(self._sizes()):
                seed = self.seed * 1_000 + number
                self._place_chunk(size, seed)
                if number < self.chunks - 1:
                    time.sleep(self.gap)
        finally:
            self.seconds = time.monotonic() - started
            self.done.set()

    def _place_chunk(self, size: int, seed: int) -> None:
        for attempt in range(1, 6):
            while self.hold.is_set():
                time.sleep(0.1)
            result = self._placer_process(size, seed)
            if result.returncode == 0:
                ids = [request.order_id for request in sample_orders(size, seed=seed)]
                with self._lock:
                    self.placed.extend(ids)
                return
            self.retries += 1
            self.failures.append(f"chunk seed {seed} try {attempt}: {result.stdout[-800:]}")
            time.sleep(1.0)

    def _placer_process(self, size: int, seed: int) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "services.placer",
            "--count",
            str(size),
            "--seed",
            str(seed),
            "--bootstrap",
            self.bootstrap(),
            "--schemas",
            str(self.schemas),
            "--topic-prefix",
            self.prefix,
            *self.store_args(),
        ]
        return subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            timeout=300,
            check=False,
            preexec_fn=die_with_parent(),
        )
