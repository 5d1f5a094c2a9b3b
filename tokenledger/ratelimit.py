"""Rate limits for gateways: requests, tokens and concurrent requests per key, user, tenant, model. Pure.

A limit (:class:`tokenledger.control.records.RateLimit`, live in the control plane) allows
``requests``, ``tokens`` (input + output, OpenAI's TPM), ``input_tokens`` and ``output_tokens``
(Anthropic's ITPM / OTPM) per minute or per day, and ``concurrent`` requests in flight, to the
requests its scope matches. A scope value ``*`` makes one bucket per distinct value (a limit of
``{"user_id": "*"}`` holds each user to it).

Each counted quantity is a GCRA bucket (the generic cell rate algorithm: the "theoretical
arrival time" ``tat`` alone is stored): a limit of ``L`` per period ``P`` emits one unit every
``T = P / L``; a request of cost ``c`` is admitted when ``max(tat, now) + c·T - now <= P``, then
``tat`` moves to that value. So a bucket holds at most ``L`` units at once and refills
continuously; over any run of length ``D`` it admits at most ``L + L·D/P`` units, exactly, for
requests and tokens alike. Tokens are reserved at admission (the exact prompt count plus
``max_tokens``) and corrected at completion with the provider's figures (``tat`` moves back by
what was not used). All buckets of a request are checked, then charged, as one step
(:class:`LocalLimiter` under a lock; ``producers.gateway.redis_limits`` in one Lua script), so
no request is admitted by one bucket and refused by another half-charged.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["requests", "tokens", "input_tokens", "output_tokens"]
KINDS: tuple[Kind, ...] = ("requests", "tokens", "input_tokens", "output_tokens")
PERIODS = {"minute": 60.0, "day": 86_400.0}
_LABEL = {"user_id": "user"}  # scope dimension -> request label


@dataclass(frozen=True)
class Charge:
    """One bucket a request is charged in."""

    key: str  # limit id | bucket values | kind
    limit_id: str
    kind: Kind
    limit: int  # units per period
    period_s: float
    cost: int  # units charged now
    fail_open: bool

    @property
    def interval(self) -> float:
        """Seconds per unit (``T``)."""
        return self.period_s / self.limit


@dataclass(frozen=True)
class Slot:
    """One concurrency bucket a request holds a slot in until it completes."""

    key: str
    limit_id: str
    limit: int
    fail_open: bool


@dataclass(frozen=True)
class BucketState:
    """A bucket after a decision: what the rate-limit headers say."""

    charge: Charge
    remaining: int  # units that could be charged now
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True)
class Verdict:
    """The answer for one request."""

    admitted: bool
    states: tuple[BucketState, ...] = ()
    limited_by: str | None = None  # the limit id that refused
    kind: str | None = None  # requests | tokens | ... | concurrent
    retry_after_s: float = 0.0
    reason: str = ""
    unavailable: bool = False  # the shared store did not answer (fail-closed)


@dataclass(frozen=True)
class Plan:
    """What a request is charged: rate buckets and concurrency slots."""

    charges: tuple[Charge, ...] = ()
    slots: tuple[Slot, ...] = ()

    @property
    def empty(self) -> bool:
        """No limit applies."""
        return not self.charges and not self.slots


def gcra(
    tat: float | None, now: float, cost: int, limit: int, period_s: float
) -> tuple[bool, float, int, float, float]:
    """One GCRA step: ``(admitted, new tat, remaining, reset seconds, retry-after seconds)``.

    ``tat`` is unchanged when the request is refused; ``remaining`` counts units that fit now.
    """
    interval = period_s / limit
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    allowed = new_tat - now <= period_s + 1e-9
    if not allowed:
        retry = math.inf if cost > limit else new_tat - now - period_s
        remaining = max(0, math.floor((period_s - (base - now)) / interval + 1e-9))
        return False, base, remaining, base - now, retry
    remaining = max(0, math.floor((period_s - (new_tat - now)) / interval + 1e-9))
    return True, new_tat, remaining, new_tat - now, 0.0


def scope_values(scope: Mapping[str, str], labels: Mapping[str, str], model: str) -> tuple[str, ...] | None:
    """The bucket values of a request under a scope (the ``*`` dimensions' values), or None if it does not match."""
    values = []
    for dim, wanted in sorted(scope.items()):
        actual = model if dim == "model" else labels.get(_LABEL.get(dim, dim), "")
        if wanted == "*":
            values.append(actual)
        elif actual != wanted:
            return None
    return tuple(values)


def plan(
    limits: Sequence[object], labels: Mapping[str, str], model: str, input_tokens: int, output_tokens: int
) -> Plan:
    """The buckets a request is charged in: every limit of its tenant whose scope it matches.

    ``input_tokens`` is the exact prompt count (or the configured estimate), ``output_tokens``
    the most the request may produce (its ``max_tokens``).
    """
    charges: list[Charge] = []
    slots: list[Slot] = []
    costs: dict[Kind, int] = {
        "requests": 1,
        "tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }
    for lim in limits:
        values = scope_values(getattr(lim, "scope"), labels, model)  # noqa: B009 - records of any model
        if values is None:
            continue
        lid: str = getattr(lim, "id")  # noqa: B009
        base = f"{lid}|{'|'.join(values)}"
        per = getattr(lim, "per")  # noqa: B009
        fail_open = bool(getattr(lim, "fail_open"))  # noqa: B009
        for kind in KINDS:
            amount = getattr(lim, kind)
            if amount:
                charges.append(
                    Charge(f"{base}|{kind}|{per}", lid, kind, int(amount), PERIODS[per], costs[kind], fail_open)
                )
        concurrent = getattr(lim, "concurrent")  # noqa: B009
        if concurrent:
            slots.append(Slot(f"{base}|concurrent", lid, int(concurrent), fail_open))
    return Plan(tuple(charges), tuple(slots))


@dataclass
class LocalLimiter:
    """The buckets of one gateway process (the embedded default: no shared store).

    ``ttl_s`` bounds how long a concurrency slot is held by a request that never completes.
    """

    ttl_s: float = 600.0
    _tat: dict[str, float] = field(default_factory=dict)
    _slots: dict[str, dict[int | str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, p: Plan, ticket: int | str, now: float) -> Verdict:
        """Check every bucket and slot, then charge them all, or nothing."""
        with self._lock:
            states: list[BucketState] = []
            pending: list[tuple[str, float]] = []
            for c in p.charges:
                ok, new_tat, remaining, reset, retry = gcra(self._tat.get(c.key), now, c.cost, c.limit, c.period_s)
                if not ok:
                    return _limited(c, remaining, reset, retry, states)
                pending.append((c.key, new_tat))
                states.append(BucketState(c, remaining, reset))
            for s in p.slots:
                held = {t: exp for t, exp in self._slots.get(s.key, {}).items() if exp > now}
                self._slots[s.key] = held
                if len(held) >= s.limit:
                    soonest = min(held.values()) - now
                    return Verdict(
                        False,
                        tuple(states),
                        s.limit_id,
                        "concurrent",
                        min(soonest, 1.0),
                        f"rate limit {s.limit_id}: {s.limit} concurrent requests in flight",
                    )
            for key, tat in pending:
                self._tat[key] = tat
            for s in p.slots:
                self._slots[s.key][ticket] = now + self.ttl_s
            return Verdict(True, tuple(states))

    def correct(self, charges: Sequence[tuple[Charge, int]], now: float) -> None:
        """Move buckets by the difference between what was reserved and what was used (``(charge, actual)``)."""
        with self._lock:
            for c, actual in charges:
                if actual == c.cost or c.key not in self._tat:
                    continue
                moved = self._tat[c.key] + (actual - c.cost) * c.interval
                self._tat[c.key] = max(now, moved) if actual < c.cost else moved  # an empty bucket is empty

    def release(self, p: Plan, ticket: int | str) -> None:
        """Give back the concurrency slots of a completed (or abandoned) request."""
        with self._lock:
            for s in p.slots:
                self._slots.get(s.key, {}).pop(ticket, None)

    def usage(self, key: str, now: float, limit: int, period_s: float) -> int:
        """Units currently held in a bucket (for metrics)."""
        with self._lock:
            tat = self._tat.get(key)
        if tat is None or tat <= now:
            return 0
        return math.ceil((tat - now) / (period_s / limit) - 1e-9)


def refusal(c: Charge, too_large: bool) -> str:
    """Why a bucket refused a request."""
    per = "minute" if c.period_s == 60 else "day"
    what = c.kind.replace("_", " ")
    if too_large:
        return f"rate limit {c.limit_id}: this request needs {c.cost} {what}, more than the {c.limit} allowed per {per}"
    return f"rate limit {c.limit_id}: {c.limit} {what} per {per}"


def _limited(c: Charge, remaining: int, reset: float, retry: float, states: list[BucketState]) -> Verdict:
    too_large = math.isinf(retry)
    wait = c.period_s if too_large else retry
    state = BucketState(c, remaining, reset)
    return Verdict(False, (*states, state), c.limit_id, c.kind, wait, refusal(c, too_large))
