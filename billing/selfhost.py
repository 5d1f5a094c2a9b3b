"""Self-hosting break-even: a month of API spend per model family against renting GPUs for it.

Pure. One replica of an open-weights class (``gpus`` GPUs) delivers ``output_tokens_per_s``
at full load; at utilisation ``u`` it serves ``tps x 3600 x hours x u`` output tokens a month
and costs ``gpus x gpu_hour x hours`` whatever it serves (rented by the month). The API costs
the family's own blended rate ``p`` = its month's cost / its output tokens (input tokens ride
along in that rate). So:

* replicas needed for volume V: ``ceil(V / capacity)``; self-hosted cost = replicas x replica cost;
* break-even volume (one replica): ``V* = replica cost / p``. Past it self-hosting is cheaper,
  provided ``V* <= capacity``; when ``p x capacity < replica cost`` a replica never pays for
  itself at that utilisation, and the API stays cheaper at any volume;
* so utilisation decides *whether* a family can pay off: self-hosted cost per 1M output tokens
  is ``replica cost / capacity(u)``, against the API's ``p`` per 1M.

Amounts are integer nano-USD; volumes integer tokens (rounded up: the volume that pays).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import yaml

from tokenledger.money import NANOS_PER_UNIT

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "tokenledger" / "data" / "self_hosting.yaml"


@dataclass(frozen=True)
class GpuClass:
    """One replica of an open-weights model class."""

    name: str
    label: str
    gpus: int
    output_tokens_per_s: int


@dataclass(frozen=True)
class SelfHostTable:
    """Assumptions (see ``tokenledger/data/self_hosting.yaml``)."""

    gpu_hour_nanos: int
    hours_per_month: int
    utilisation: Decimal
    sensitivity: tuple[Decimal, ...]
    classes: Mapping[str, GpuClass]
    families: tuple[tuple[str, str, str], ...]  # (model prefix, family, class)

    @classmethod
    def load(cls, path: Path = DEFAULT_TABLE) -> SelfHostTable:
        """Read the YAML table."""
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        return cls(
            gpu_hour_nanos=int(Decimal(str(doc["gpu_hour_usd"])) * NANOS_PER_UNIT),
            hours_per_month=int(doc["hours_per_month"]),
            utilisation=Decimal(str(doc["utilisation"])),
            sensitivity=tuple(Decimal(str(u)) for u in doc["sensitivity"]),
            classes={
                k: GpuClass(k, str(v["label"]), int(v["gpus"]), int(v["output_tokens_per_s"]))
                for k, v in doc["classes"].items()
            },
            families=tuple((str(f["prefix"]), str(f["family"]), str(f["class"])) for f in doc["families"]),
        )

    def family_of(self, model: str) -> tuple[str, GpuClass] | None:
        """The family and class of an API model, by the first matching prefix."""
        for prefix, family, klass in self.families:
            if model.startswith(prefix):
                return family, self.classes[klass]
        return None


@dataclass(frozen=True)
class Sensitivity:
    """Break-even at one utilisation."""

    utilisation: Decimal
    capacity_tokens: int  # output tokens one replica serves a month at this utilisation
    break_even_tokens: int | None  # None: a replica never pays for itself at this utilisation
    self_hosted_nanos: int  # this month's volume on as many replicas as it needs
    nanos_per_million: int  # self-hosted cost of 1M output tokens with the replica this busy


@dataclass(frozen=True)
class BreakEven:
    """One model family's month: API cost against self-hosting it."""

    family: str
    gpu_class: GpuClass
    models: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    api_nanos: int
    replica_month_nanos: int
    at: Sensitivity  # at the table's utilisation
    sensitivity: tuple[Sensitivity, ...]

    @property
    def api_nanos_per_million(self) -> int:
        """The family's blended API cost of 1M output tokens (input included)."""
        return _ceil(Decimal(self.api_nanos) * 1_000_000 / self.output_tokens) if self.output_tokens else 0

    @property
    def saving_nanos(self) -> int:
        """What self-hosting would save this month (negative: what it would cost more)."""
        return self.api_nanos - self.at.self_hosted_nanos

    @property
    def recommendation(self) -> str:
        """One sentence."""
        if self.output_tokens == 0:
            return "no output tokens this month"
        if self.saving_nanos > 0:
            return "self-hosting would be cheaper at this volume"
        if self.at.break_even_tokens is None:
            return "stay on the API: a replica never pays for itself at this utilisation"
        return "stay on the API until the volume reaches the break-even"


def _ceil(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_CEILING))


def _at(u: Decimal, k: GpuClass, table: SelfHostTable, output_tokens: int, api_nanos: int) -> Sensitivity:
    capacity = int(Decimal(k.output_tokens_per_s * 3600 * table.hours_per_month) * u)
    replica = k.gpus * table.gpu_hour_nanos * table.hours_per_month
    replicas = max(1, -(-output_tokens // capacity)) if capacity else 0
    break_even: int | None = None
    if output_tokens and capacity:
        rate = Decimal(api_nanos) / output_tokens  # nano-USD per output token, the family's blend
        if rate * capacity >= replica:
            break_even = _ceil(Decimal(replica) / rate)
    per_million = _ceil(Decimal(replica) * 1_000_000 / capacity) if capacity else 0
    return Sensitivity(u, capacity, break_even, replicas * replica, per_million)


def break_even(rows: Iterable[Mapping[str, Any]], table: SelfHostTable) -> list[BreakEven]:
    """Per family, from spend rows carrying ``model``, ``input_tokens``, ``output_tokens``, ``cost_nanos``."""
    acc: dict[str, list[Any]] = {}
    for r in rows:
        found = table.family_of(str(r["model"]))
        if found is None:
            continue
        family, k = found
        a = acc.setdefault(family, [k, set(), 0, 0, 0])
        a[1].add(str(r["model"]))
        a[2] += int(r["input_tokens"])
        a[3] += int(r["output_tokens"])
        a[4] += int(r["cost_nanos"])
    out = []
    for family, (k, models, inp, outp, api) in acc.items():
        replica = k.gpus * table.gpu_hour_nanos * table.hours_per_month
        sens = tuple(_at(u, k, table, outp, api) for u in table.sensitivity)
        out.append(
            BreakEven(
                family,
                k,
                tuple(sorted(models)),
                inp,
                outp,
                api,
                replica,
                _at(table.utilisation, k, table, outp, api),
                sens,
            )
        )
    out.sort(key=lambda b: (-b.api_nanos, b.family))
    return out


def share(part: int, whole: int) -> Decimal:
    """``part / whole`` to four places, half-even (0 when ``whole`` is 0)."""
    if not whole:
        return Decimal(0)
    return (Decimal(part) / whole).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
