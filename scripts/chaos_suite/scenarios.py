"""What each scenario does while orders flow (run on the harness's main thread).

Every scenario waits until part of the orders have ended, then injects its fault; the
runner checks the same invariants after each (see :mod:`.checks`). A scenario writes what
it did, and when, through ``ctx.note``; those notes end up in the JSON report.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .faults import busiest_partitions, group_members, inject_poison
from .fleet import SERVICES, Fleet


class Context(Protocol):
    """What a scenario may use: the fleet, the broker(s), the placer, progress and a clock."""

    fleet: Fleet
    kafka: Any
    placer: Any
    rng: random.Random
    prefix: str

    def note(self, text: str, **figures: object) -> None:
        """Record what the scenario did (with figures) in the report's timeline."""

    def sleep(self, seconds: float) -> None:
        """Sleep while supervising the fleet (crashed replicas are restarted)."""

    def wait_progress(self, share: float, timeout: float = 180.0) -> float:
        """Wait until ``share`` of all orders ended; return the share reached."""

    def event_topics(self) -> list[tuple[str, str]]:
        """Return (topic, event type) of every event topic of this run."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named fault, the function that injects it, and how the fleet is started."""

    name: str
    act: Callable[[Context], None]
    exactly_once: bool = False
    cluster: bool = False
    summary: str = ""


def kill_random(ctx: Context) -> None:
    """SIGKILL a random replica of any service every few seconds; restart it soon after."""
    ctx.wait_progress(0.05)
    kills = 0
    while not ctx.placer.done.is_set() or kills < 3:
        ctx.sleep(ctx.rng.uniform(2.0, 5.0))
        candidates = ctx.fleet.running()
        if not candidates:
            continue
        victim = ctx.rng.choice(candidates)
        ctx.fleet.kill(victim)
        kills += 1
        down = ctx.rng.uniform(0.0, 2.0)
        ctx.note(f"SIGKILL {victim.name}", down_s=round(down, 2))
        ctx.sleep(down)
        ctx.fleet.start(victim)
    ctx.note("random kills done", kills=kills)


def lost_replica(ctx: Context) -> None:
    """SIGKILL one replica of payment and of inventory for good (never restarted)."""
    ctx.wait_progress(0.2)
    for service in ("payment", "inventory"):
        replicas = ctx.fleet.of(service)
        if len(replicas) < 2:
            continue
        victim = ctx.rng.choice(replicas)
        victim.retired = True
        ctx.fleet.kill(victim)
        ctx.note(f"SIGKILL {victim.name} for good")


def add_replica(ctx: Context) -> None:
    """Start one more replica of inventory and of payment mid-run (scale out)."""
    ctx.wait_progress(0.25)
    for service in ("inventory", "payment"):
        added = ctx.fleet.add(service)
        ctx.note(f"added {added.name}")


def broker_restart(ctx: Context) -> None:
    """SIGKILL the broker mid-run and restart it on the same data dir and ports."""
    ctx.wait_progress(0.3)
    ctx.placer.hold.set()
    ctx.kafka.broker.kill()
    ctx.note("broker SIGKILLed")
    ctx.sleep(3.0)
    seconds = ctx.kafka.broker.restart(timeout=300.0)  # log recovery after a crash
    ctx.placer.hold.clear()
    ctx.note("broker restarted on its data", restart_s=round(seconds, 2))


def poison(ctx: Context) -> None:
    """Write poison records (garbage, bad payloads under valid headers) into every event topic."""
    for share in (0.2, 0.6):
        ctx.wait_progress(share)
        written = inject_poison(
            ctx.kafka.bootstrap, ctx.event_topics(), per_topic=2, seed=ctx.rng.randint(0, 10**6)
        )
        ctx.note("poison records written", records=written)


def sigterm_drain(ctx: Context) -> None:
    """SIGTERM one replica of every service mid-run; each must drain and exit 0, then return."""
    ctx.wait_progress(0.3)
    for service in SERVICES:
        replicas = ctx.fleet.of(service)
        if not replicas:
            continue
        victim = ctx.rng.choice(replicas)
        code, seconds = ctx.fleet.terminate(victim)
        ctx.note(f"SIGTERM {victim.name}", exit_code=code, drain_s=round(seconds, 2))
        ctx.fleet.start(victim)


def _wait_gone(ctx: Context, group: str, member: str, timeout: float) -> float:
    """Wait until ``member`` left ``group`` (its partitions moved); return the seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if member not in group_members(ctx.kafka.bootstrap, group):
                return time.monotonic() - started
        except Exception as error:  # a coordinator moving: ask again
            ctx.note("describe group failed", error=str(error)[:200])
        ctx.sleep(1.0)
    return -1.0


def zombie(ctx: Context) -> None:
    """Exactly-once: SIGSTOP a payment replica mid-batch; SIGCONT it after its partitions moved."""
    ctx.wait_progress(0.25)
    replicas = ctx.fleet.of("payment")
    victim = ctx.rng.choice(replicas)
    ctx.fleet.pause(victim)
    ctx.note(f"SIGSTOP {victim.name}")
    moved = _wait_gone(ctx, f"{ctx.prefix}payment", victim.name, timeout=120.0)
    ctx.note(f"{victim.name} left the group", after_s=round(moved, 2))
    ctx.sleep(2.0)
    ctx.fleet.resume(victim)
    ctx.note(f"SIGCONT {victim.name} (zombie resumes its batch)")
    ctx.sleep(5.0)
    if victim.process is not None and victim.process.poll() is not None:
        ctx.note(f"{victim.name} exited after resuming", exit_code=victim.process.returncode)
        victim.told = True  # the expected end of a fenced zombie: not a crash
        ctx.fleet.start(victim)


def cluster_leader(ctx: Context) -> None:
    """Three brokers: SIGKILL the leader of the busiest partitions mid-run, restart it later."""
    ctx.wait_progress(0.3)
    topics = [topic for topic, _ in ctx.event_topics()]
    busiest = busiest_partitions(ctx.kafka.bootstrap, topics, count=6)
    victim = ctx.kafka.cluster.kill_leader_of(busiest)
    ctx.note(f"SIGKILL broker {victim}, leader of the busiest partitions", partitions=busiest)
    moved = ctx.kafka.cluster.wait_for_leaders(busiest, avoid=victim)
    ctx.note("leaders moved", after_s=round(moved, 2))
    ctx.sleep(10.0)
    seconds = ctx.kafka.cluster.restart(victim, timeout=300.0)
    ctx.note(f"broker {victim} restarted on its data", restart_s=round(seconds, 2))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("kill-random", kill_random, summary=kill_random.__doc__ or ""),
        Scenario("lost-replica", lost_replica, summary=lost_replica.__doc__ or ""),
        Scenario("add-replica", add_replica, summary=add_replica.__doc__ or ""),
        Scenario("broker-restart", broker_restart, summary=broker_restart.__doc__ or ""),
        Scenario("poison", poison, summary=poison.__doc__ or ""),
        Scenario("sigterm-drain", sigterm_drain, summary=sigterm_drain.__doc__ or ""),
        Scenario("eos-zombie", zombie, exactly_once=True, summary=zombie.__doc__ or ""),
        Scenario(
            "eos-broker-restart",
            broker_restart,
            exactly_once=True,
            summary="Exactly-once: " + (broker_restart.__doc__ or ""),
        ),
        Scenario(
            "cluster-leader", cluster_leader, cluster=True, summary=cluster_leader.__doc__ or ""
        ),
    )
}
"""Every scenario by name, in the order a full run plays them."""

FULL_ONLY = ("eos-broker-restart", "cluster-leader")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGCONT)
