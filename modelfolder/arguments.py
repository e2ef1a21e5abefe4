"""Command-line argument types shared by the gateway's and the runtime's commands (the runtime
never imports the gateway; both import this)."""

from __future__ import annotations

import argparse
import math


def seconds(text: str) -> float:
    """A time bound: a finite number of seconds greater than 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds greater than 0")
    return value
