"""Start following the control topic, seeding it from a file the first time.

Seeding writes a file's records whose ids the control topic has never held (deleted ids
included: tombstones are kept, ``delete.retention.ms`` is effectively forever), so a file seeds
once and every later change, made through the admin API or ``billing control apply``, wins over
it, whatever process restarts with whatever file. Processes seed only the kinds they own:
the workers tenants, defaults and budgets (and keys), ingest and billing their keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tokenledger.budgets import BudgetFile
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile, Record
from tokenledger.control.log import ControlLog, ControlWriter
from tokenledger.control.records import Defaults, record_key
from tokenledger.kafka_config import KafkaSettings

log = logging.getLogger("tokenledger.control")
ALL_KINDS = frozenset({"defaults", "tenant", "budget", "key", "limit"})
WORKER_KINDS = frozenset({"defaults", "tenant", "budget"})  # keys, limits and FX are the edges' and billing's


def seed_records(path: Path | None = None) -> list[Record]:
    """The seed's records: ``TOKENLEDGER_CONTROL_SEED``, else ``TOKENLEDGER_BUDGETS``, else the shipped file.

    An older budgets file (``TOKENLEDGER_BUDGETS``) seeds its budgets, its timezone as the
    default, and the shipped keys.

    Raises:
        ConfigError: The file is missing or invalid.
    """
    env = os.environ.get
    if path is None and env("TOKENLEDGER_CONTROL_SEED"):
        path = Path(env("TOKENLEDGER_CONTROL_SEED", ""))
    if path is None and env("TOKENLEDGER_BUDGETS"):
        legacy = BudgetFile.load(Path(env("TOKENLEDGER_BUDGETS", "")))  # ConfigError names a bad file
        shipped = ControlFile.load(DEFAULT_CONTROL)
        doc = ControlFile(
            defaults=Defaults(timezone=legacy.timezone, currency=(shipped.defaults or Defaults()).currency),
            budgets=ControlFile.load(Path(env("TOKENLEDGER_BUDGETS", ""))).budgets,
            keys=shipped.keys,
        )
        return doc.records()
    return ControlFile.load(path or DEFAULT_CONTROL).records()


def follow(
    settings: KafkaSettings,
    *,
    seed: list[Record] | None = None,
    kinds: frozenset[str] = ALL_KINDS,
    hold: frozenset[str] | None = None,
    actor: str = "seed",
    wait_s: float = 60.0,
) -> ControlLog:
    """A caught-up :class:`ControlLog`, after seeding ``seed``'s records of ``kinds`` never written before.

    The log holds the kinds ``hold`` plus ``kinds`` (``hold`` None: every kind).

    Raises:
        ControlUnavailable: The control topic was not read (or the seed not written) in time.
    """
    held = None if hold is None else hold | kinds
    control = ControlLog(settings, kinds=held).start(wait_s)
    fresh = [r for r in seed or () if r[0] in kinds and record_key(r[0], r[1]) not in control.state.seen]
    if fresh:
        writer = ControlWriter(settings, control)
        try:
            writer.write(fresh, actor=actor, action="seed")
        finally:
            writer.close()
        log.info("control plane seeded with %d record(s)", len(fresh))
    return control


def load_seed(kinds: frozenset[str] = ALL_KINDS) -> list[Record]:
    """:func:`seed_records` of ``kinds`` (ConfigError on a bad file, raised before any Kafka work)."""
    return [r for r in seed_records() if r[0] in kinds]
