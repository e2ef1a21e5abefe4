"""SIGKILL the instances behind a balancer in turn, under load, and count what the clients saw:
the measurement behind the haproxy config's `option http-buffer-request` (docs/RELIABILITY.md).
Not a test (it asserts nothing, it reports); run from the checkout root after `make test-lb` has
installed the balancers:

    .venv/bin/python -m tests.deploy.kill_cycles --balancer haproxy --kills 6 [--drop-option LINE]

`--drop-option "option http-buffer-request"` runs the committed config without that line;
`--numbers 15000` sends JSON bodies of about 100 kB (more than haproxy's buffer). Each
cycle: SIGKILL one instance (gw1, gw2, gw3 in turn), 1.5 s later start it again, wait until it is
ready and 2.5 s more. Prints the requests sent, the failed ones (and whether the balancer logged
them), the replayed ones."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tests.deploy import balancers, fleet


def main() -> None:
    parser = argparse.ArgumentParser(description="SIGKILL the instances behind a balancer in turn, under load")
    parser.add_argument("--balancer", choices=["haproxy", "nginx"], default="haproxy")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--drop-option", default="", help="a line of the committed config to leave out")
    parser.add_argument("--numbers", type=int, default=1,
                        help="numbers in each request (15,000: a JSON body of about 100 kB)")
    arguments = parser.parse_args()
    balancers.HAPROXY = balancers.HAPROXY or "/usr/sbin/haproxy"
    balancers.NGINX = balancers.NGINX or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="kill-cycles-") as folder:
        root = Path(folder)
        if arguments.drop_option:
            committed = balancers.HAPROXY_CFG if arguments.balancer == "haproxy" else balancers.NGINX_CONF
            text = committed.read_text()
            kept = [line for line in text.splitlines(keepends=True) if line.strip() != arguments.drop_option]
            assert len(kept) == len(text.splitlines()) - 1, f"{arguments.drop_option!r} is not a line of {committed}"
            changed = root / committed.name
            changed.write_text("".join(kept))
            if arguments.balancer == "haproxy":
                balancers.HAPROXY_CFG = changed
            else:
                balancers.NGINX_CONF = changed
        print(cycles(root, arguments.balancer, arguments.kills, arguments.drop_option, arguments.numbers))


def cycles(root: Path, kind: str, kills: int, dropped: str, numbers: int) -> str:
    with fleet.running(root, kind, dict(os.environ, GATEWAY_SHUTDOWN_GRACE_S="2")) as running:
        instances, balancer, load = running.instances, running.balancer, running.load
        load.numbers = numbers
        load.start()
        time.sleep(1)
        for number in range(kills):
            instance = instances[number % len(instances)]
            instance.kill()
            time.sleep(1.5)
            instance.start()
            instance.wait_ready()
            time.sleep(2.5)
        outcomes = load.stop()
        time.sleep(0.5)  # the balancer logs the last answers a moment after sending them
        attempts = balancer.attempts()
    failed = [o for o in outcomes if o.problem]
    lines = [f"{kind}{' without ' + repr(dropped) if dropped else ''}, {kills} SIGKILLs, {numbers} numbers a request: "
             f"{len(outcomes)} requests, "
             f"{len(failed)} failed ({sum(1 for o in failed if o.request_id not in attempts)} not in its log), "
             f"{sum(1 for attempt in attempts.values() if attempt.tried)} replayed on another instance"]
    lines += [f"  {o.request_id}: {o.problem[:100]}" for o in failed]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
