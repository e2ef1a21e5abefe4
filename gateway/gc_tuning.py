"""The collector settings of a serving process live in runtime.gc_tuning (the runtime tunes
itself too and may not import the gateway); this keeps `gateway.gc_tuning` importable."""

from runtime.gc_tuning import THRESHOLDS as THRESHOLDS
from runtime.gc_tuning import tune_for_serving as tune_for_serving
