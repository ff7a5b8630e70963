"""Retry budgets: how often a failing handler is retried and how long to wait in between.

A forward step or listener uses its own :class:`~choreo.choreography.service.Retry` or the worker's
default; a compensation gets a larger default budget (:data:`COMPENSATION_RETRY`): when a
compensation gives up, a human has to finish the saga, so it is worth trying harder.
"""

from __future__ import annotations

import random
from typing import Final

from choreo.choreography.service import HandlerSpec, Retry, StepKind

__all__ = ["COMPENSATION_RETRY", "DEFAULT_RETRY", "backoff_delay", "retry_for"]

DEFAULT_RETRY: Final = Retry()
"""The default budget of forward steps and listeners: 5 attempts, 50 ms doubling to 5 s."""

COMPENSATION_RETRY: Final = Retry(max_attempts=20, backoff=0.1, multiplier=2.0, max_backoff=5.0)
"""The default budget of compensations: 20 attempts, 100 ms doubling, capped at 5 s."""


def retry_for(spec: HandlerSpec, default: Retry, compensation: Retry) -> Retry:
    """Return the retry budget of ``spec``: its own, else the default for its kind."""
    if spec.retry is not None:
        return spec.retry
    return compensation if spec.kind is StepKind.COMPENSATION else default


def backoff_delay(retry: Retry, retry_number: int, rng: random.Random | None = None) -> float:
    """Return the seconds to wait before the ``retry_number``-th retry (1-based), jittered."""
    delay = retry.delay(retry_number)
    if retry.jitter and delay > 0:
        delay *= (rng or random).uniform(0.5, 1.0)
    return delay
