"""Three real `gateway serve` instances of the example config behind a real haproxy and a real
nginx, each running the committed example config (deploy/), under a steady load of keep-alive
clients:

- a rolling restart (each instance in turn: SIGTERM, exit, start again, wait until the balancer
  sends to it again) fails no client request; haproxy marks the draining instance down during its
  shutdown grace (while it still accepts) and sends it nothing from then on, so the instance's last
  prediction is over before it stops accepting; nginx (passive checks only) keeps sending to it
  through the grace, and passes on to another instance the requests that meet it once it has
  stopped accepting;
- a SIGKILLed instance fails at most the requests in flight on it (both balancers replay those on
  another instance: predictions are idempotent), and is routed around.

Each balancer's figures (requests, failures, times from the signal to the balancer's reaction)
are printed and, with GATEWAY_LB_FIGURES=<file>, appended to that file as a JSON line;
docs/RELIABILITY.md quotes them. `make test-lb` installs haproxy and nginx and runs these."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.balancers import HAPROXY, NGINX, Attempt, Balancer
from tests.deploy.fleet import Instance, Load, Outcome, stable_port
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.lb,
    pytest.mark.skipif(not (HAPROXY and Path(HAPROXY).exists() and NGINX and Path(NGINX).exists()),
                       reason="needs GATEWAY_HAPROXY and GATEWAY_NGINX (haproxy and nginx binaries): "
                              "run `make test-lb`"),
]

# The gateway's default shutdown grace: the haproxy config's checks are chosen to fit in it.
GRACE_S = 2.0
CLIENTS = 6


@dataclass
class Fleet:
    instances: list[Instance]
    balancer: Balancer
    load: Load

    def served_by(self, outcome: Outcome, attempts: dict[str, Attempt]) -> str | None:
        attempt = attempts.get(outcome.request_id)
        return attempt.served_by if attempt is not None else None


@pytest.fixture(params=["haproxy", "nginx"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    env = dict(os.environ, GATEWAY_SHUTDOWN_GRACE_S=str(GRACE_S))
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(stable_port())
    front, *backends = sorted(ports)
    instances = [Instance(f"gw{number}", port, tmp_path / f"gw{number}", env)
                 for number, port in enumerate(backends, start=1)]
    balancer = Balancer(request.param, tmp_path / request.param, front, instances)
    load = Load(balancer.url, clients=CLIENTS)
    try:
        for instance in instances:
            instance.start()
        for instance in instances:
            instance.wait_ready()
        balancer.start()
        yield Fleet(instances, balancer, load)
    finally:
        load.stop()
        balancer.stop()
        for instance in instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.terminate()
        for instance in instances:
            instance.stop()


def test_a_rolling_restart_fails_no_request_and_a_killed_instance_only_those_in_flight(fleet: Fleet) -> None:
    balancer, load = fleet.balancer, fleet.load
    started = time.time()
    load.start()
    wait_until(lambda: _each_served(fleet, started), timeout=30, what="every instance answering through the balancer")

    restarts = [_restart(fleet, instance) for instance in fleet.instances]
    killed_at, crash = _kill(fleet, fleet.instances[1])
    outcomes = load.stop()
    # A balancer logs a request once it has answered it: the last ones may come a moment after.
    answered = {o.request_id for o in outcomes if not o.problem}
    wait_until(lambda: answered <= balancer.attempts().keys(), timeout=10,
               what=f"every answered request in {balancer.kind}'s log")
    attempts = balancer.attempts()

    # The restarts were over (every instance back) before the kill: what ended before it is theirs.
    failed_in_restarts = [o for o in outcomes if o.problem and o.done < killed_at]
    assert failed_in_restarts == []
    failed_in_crash = [o for o in outcomes if o.problem and o.done >= killed_at]
    assert len(failed_in_crash) <= CLIENTS, failed_in_crash  # at most one in flight per client
    if balancer.kind == "haproxy":
        # Whatever failed had been sent before haproxy marked the instance down.
        assert all(o.sent < killed_at + crash["down_after_kill_s"] for o in failed_in_crash), failed_in_crash

    figures = {
        "balancer": balancer.kind, "clients": CLIENTS, "shutdown_grace_s": GRACE_S,
        "requests": len(outcomes), "failed": len(failed_in_restarts) + len(failed_in_crash),
        "passed_on": sum(1 for attempt in attempts.values() if attempt.tried),
        "seconds": round(outcomes[-1].done - outcomes[0].sent, 1),
        "restarts": restarts, "kill": crash | {
            "failed": len(failed_in_crash),
            "last_failure_after_kill_s": round(max(o.done for o in failed_in_crash) - killed_at, 3)
            if failed_in_crash else None,
            "problems": sorted({o.problem[:80] for o in failed_in_crash})},
    }
    _record(figures)


def _each_served(fleet: Fleet, since: float) -> bool:
    attempts = fleet.balancer.attempts()
    served = {fleet.served_by(o, attempts) for o in fleet.load.so_far() if o.sent > since and not o.problem}
    return all(instance.name in served for instance in fleet.instances)


def _restart(fleet: Fleet, instance: Instance) -> dict[str, Any]:
    """SIGTERM `instance`, see how the balancer reacts while it drains, start it again and wait
    until the balancer sends to it again. Its figures (times from the SIGTERM)."""
    balancer = fleet.balancer
    assert instance.process is not None
    life = instance.lives
    terminated = time.time()
    instance.terminate()
    down = None
    if balancer.kind == "haproxy":
        wait_until(lambda: balancer.states()[instance.name].startswith("DOWN"), timeout=GRACE_S + 10,
                   what=f"haproxy marking {instance.name} down")
        down = time.time()
        # Marked down during the grace: the instance still accepted connections then.
        assert instance.logged("stopping:") is None, f"{instance.name} stopped accepting before haproxy saw it"
    assert instance.process.wait(timeout=GRACE_S + 30) == 0
    stopping = instance.logged("stopping:")  # when it stopped accepting: the end of its grace
    assert stopping is not None
    instance.start()
    instance.wait_ready()
    ready = time.time()
    wait_until(lambda: _served_since(fleet, instance, ready), timeout=30,
               what=f"{balancer.kind} sending to {instance.name} again")

    attempts = balancer.attempts()
    before_restart = [o for o in fleet.load.so_far() if terminated <= o.sent < ready]
    to_it = [o for o in before_restart if fleet.served_by(o, attempts) == instance.name]
    # The gateway's own access log: the last prediction the instance answered before it stopped.
    predictions = [entry for entry in instance.served(life) if str(entry["request_id"]).startswith("lb-")]
    last_answer = max(float(str(entry["time"])) for entry in predictions)
    figures: dict[str, Any] = {
        "instance": instance.name,
        "stopped_accepting_after_term_s": round(stopping - terminated, 3),
        "served_in_grace": sum(1 for o in to_it if o.sent < stopping),
        "last_answer_before_stop_s": round(stopping - last_answer, 3),
        "passed_on": sum(1 for o in before_restart if o.request_id in attempts and (
            instance.name in attempts[o.request_id].tried
            or (balancer.kind == "haproxy" and attempts[o.request_id].tried))),
    }
    if down is not None:
        sent_after_down = [o for o in to_it if o.sent > down]
        assert sent_after_down == [], f"haproxy sent to {instance.name} after marking it down"
        # So its last prediction was answered before it stopped accepting (its own log says so).
        assert last_answer < stopping
        figures["down_after_term_s"] = round(down - terminated, 3)
    return figures


def _served_since(fleet: Fleet, instance: Instance, since: float) -> bool:
    attempts = fleet.balancer.attempts()
    return any(fleet.served_by(o, attempts) == instance.name for o in fleet.load.so_far() if o.sent > since)


def _kill(fleet: Fleet, instance: Instance) -> tuple[float, dict[str, Any]]:
    """SIGKILL `instance` under load and keep the load on until the balancer has shown how it
    routes around it: haproxy, until it marked it down and 200 more requests were answered; nginx,
    until it tried the dead instance again after fail_timeout (5 s), each try passed on."""
    balancer = fleet.balancer
    killed = time.time()
    instance.kill()
    figures: dict[str, Any] = {"instance": instance.name}
    if balancer.kind == "haproxy":
        wait_until(lambda: balancer.states()[instance.name].startswith("DOWN"), timeout=10,
                   what=f"haproxy marking the killed {instance.name} down")
        down = time.time()
        figures["down_after_kill_s"] = round(down - killed, 3)
        wait_until(lambda: sum(1 for o in fleet.load.so_far() if o.sent > down) >= 200, timeout=30,
                   what="200 requests after the kill")
    else:
        wait_until(lambda: len(_tried(fleet, instance, killed)) >= 2
                   and max(_tried(fleet, instance, killed)) - min(_tried(fleet, instance, killed)) > 4,
                   timeout=30, what=f"nginx trying the dead {instance.name} again after fail_timeout")
    attempts = balancer.attempts()
    after = [o for o in fleet.load.so_far() if o.sent >= killed]
    figures |= {
        "requests_after_kill": len(after),
        "passed_on": sum(1 for o in after if o.request_id in attempts and attempts[o.request_id].tried),
    }
    if balancer.kind == "nginx":  # haproxy's log counts a request's retries without naming the servers
        tried = _tried(fleet, instance, killed)
        figures |= {"tries_of_the_dead_instance": len(tried), "last_try_after_kill_s": round(max(tried) - killed, 3)}
    return killed, figures


def _tried(fleet: Fleet, instance: Instance, since: float) -> list[float]:
    """nginx: when the requests sent after `since` that tried `instance` were sent."""
    attempts = fleet.balancer.attempts()
    return [o.sent for o in fleet.load.so_far()
            if o.sent >= since and o.request_id in attempts and instance.name in attempts[o.request_id].tried]


def _record(figures: dict[str, Any]) -> None:
    line = json.dumps(figures)
    print(f"\nload balancer figures: {line}")
    if kept := os.environ.get("GATEWAY_LB_FIGURES"):
        with open(kept, "a") as file:
            file.write(line + "\n")
