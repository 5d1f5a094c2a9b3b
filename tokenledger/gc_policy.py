"""Garbage-collector settings for the long-running stream processes (workers, sink).

These processes allocate millions of short-lived tuples, dicts and strings per second. Nearly
all of them die young, without cycles, freed by reference counting. CPython's default
generation-0 threshold (700 allocations) still runs a collection every ~700 of them, and each
older-generation pass walks every tracked object the process holds: its tables, identity
index and control state. Timed with ``gc.callbacks`` in both workers over a
``bench/bench_pipeline.py 100000`` run: CPython's settings spent 5.2-6.7 % of each worker's
CPU in ~600 collections; the settings below 1.8 % in ~7.

Objects alive at start-up (modules, the control state just replayed) are moved out of the
collector's view once (``gc.freeze``). Cyclic garbage is still collected: generation 0 every
50,000 net allocations, a full pass every 50 x 20 of those.
"""

from __future__ import annotations

import gc
import os

from tokenledger.errors import ConfigError

DEFAULT_THRESHOLD = (50_000, 20, 50)
ENV = "TOKENLEDGER_GC_THRESHOLD"


def threshold_from(value: str | None) -> tuple[int, int, int] | None:
    """The thresholds an ``TOKENLEDGER_GC_THRESHOLD`` value asks for (``None``: CPython's defaults).

    Raises:
        ConfigError: Not ``default`` nor three positive integers separated by commas.
    """
    if value is None or not value.strip():
        return DEFAULT_THRESHOLD
    if value.strip() == "default":
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"{ENV} must be 'default' or three positive integers like 50000,20,50, not {value!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def tune_for_throughput() -> tuple[int, int, int]:
    """Freeze what start-up allocated and apply the configured thresholds; returns those in force.

    Raises:
        ConfigError: ``TOKENLEDGER_GC_THRESHOLD`` is malformed.
    """
    wanted = threshold_from(os.environ.get(ENV))
    if wanted is None:
        return gc.get_threshold()
    gc.collect()  # what start-up left as garbage goes now, not into the frozen set
    gc.freeze()
    gc.set_threshold(*wanted)
    return wanted
