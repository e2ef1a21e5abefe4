"""Garbage-collector settings for a long-running serving process.

CPython runs a young collection every 700 net allocations of container objects, and a request
allocates dozens (dicts, lists, futures, protobuf and numpy wrappers): at 5k requests/s the
gateway ran ~80 young and several full collections per second, the full ones walking every
object made at start (modules, protobuf descriptors, numpy), ~4-5 % of its CPU and a share of
its tail latency. `gc.freeze()` moves what exists once the process is ready out of the
collector's sight, and a larger first threshold makes young collections rarer. Cycles are
still collected; memory stays flat (the memory row of `make bench` checks it).
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 50)


def tune_for_serving() -> None:
    """Call once the process has loaded everything it needs to serve."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
