"""Per-request budget decisions for gateways: breaker state + local reservations -> decision.

Deterministic: time (``now`` for periods, ``mono`` for feed staleness) and randomness
(``rand`` for the throttle rule) are passed in. The Kafka side lives in
``producers.breaker_client``; this module never does I/O.

Rules (every matching budget is checked; the most restrictive answer wins):

* spend seen by the gateway = the breaker's ``spent_nanos`` (zero once ``period_end`` has
  passed) + this gateway's *unconfirmed* completions (finished requests the breaker does not
  yet include) + its *in-flight* reservations (each admitted request's worst-case cost, from
  its prompt tokens and ``max_tokens``, until it completes);
* ``broken`` breaker, or spend + this request's worst case > the headroom this gateway may use
  -> **deny** (HTTP 429), ``retry_after`` = seconds to the period end (rolling windows: 60 s);
* ``throttled`` -> **throttle rule**: admit with probability
  ``p = (limit - spend) / (limit - throttle_level)``, a straight line from 1 at the throttle
  level to 0 at the limit; admitted requests are downgraded; rejected ones get
  ``retry_after`` = 5 s;
* ``warning`` or admitted while throttled -> **downgrade**: the budget's downgrade model and
  ``max_tokens`` capped at its ``max_tokens_per_request`` (when configured);
* otherwise **allow**.

Whitelisted features are never throttled or denied, but their cost is still reserved and
counted. When the breaker feed is stale (no contact with the broker for ``stale_after_s``)
or not bootstrapped yet, a ``fail_open`` budget keeps deciding on its last known state and a
fail-closed budget denies (``retry_after`` 5 s).

Overshoot bound. With one gateway in front of a budget (``headroom_share = 1``), a request
is admitted only if confirmed spend + unconfirmed + in-flight worst cases + its own worst
case <= limit, so the spend it admits never passes the limit; what can still overshoot is
(a) spend that reaches the budget without passing this gateway, during one pipeline latency
(breaker age), and (b) reservation error: zero for the output (``max_tokens`` is enforced
upstream) and for the prompt (counted exactly), except tool schemas and non-OpenAI
tokenizers. With ``G`` gateways, ``headroom_share = 1/G`` splits the remaining headroom so
their in-flight sum stays under the limit too. A completion stays counted locally until a
breaker newer than it (``updated_at`` >= its event time, received ``hold_s`` after it
finished) has been seen: the gateway may count it twice for a moment (deny a little
early), never zero times.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from tokenledger.budget_eval import scope_matches
from tokenledger.scope_index import Anchor, anchor_of, probes

Action = Literal["allow", "downgrade", "throttle", "deny"]
_SEVERITY: dict[Action, int] = {"allow": 0, "downgrade": 1, "throttle": 2, "deny": 3}
ROLLING_RETRY_S = 60
THROTTLE_RETRY_S = 5
UNAVAILABLE_RETRY_S = 5


@dataclass(frozen=True)
class BreakerView:
    """A breaker message (topic ``breakers``) as the gateway needs it."""

    budget_id: str
    tenant: str
    scope: Mapping[str, str]
    state: str
    spent_nanos: int
    limit_nanos: int
    throttle_nanos: int
    period_end: datetime | None
    updated_at: datetime
    downgrade_model: str | None = None
    max_tokens_per_request: int | None = None
    whitelist_features: frozenset[str] = frozenset()
    fail_open: bool = False

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> BreakerView:
        """Parse the wire form published by the spend agent."""
        end = doc.get("period_end")
        limit = int(doc["limit_nanos"])
        return cls(
            budget_id=str(doc["budget_id"]),
            tenant=str(doc["tenant"]),
            scope=dict(doc.get("scope") or {}),
            state=str(doc["state"]),
            spent_nanos=int(doc["spent_nanos"]),
            limit_nanos=limit,
            throttle_nanos=int(doc.get("throttle_nanos", limit * 8 // 10)),
            period_end=datetime.fromisoformat(end) if end else None,
            updated_at=datetime.fromisoformat(str(doc["updated_at"])),
            downgrade_model=doc.get("downgrade_model"),
            max_tokens_per_request=doc.get("max_tokens_per_request"),
            whitelist_features=frozenset(doc.get("whitelist_features") or ()),
            fail_open=bool(doc.get("fail_open", False)),
        )

    def ended(self, now: datetime) -> bool:
        """Whether ``now`` is past this breaker's calendar period (its state no longer applies)."""
        return self.period_end is not None and now >= self.period_end

    def matches(self, tenant: str, labels: Mapping[str, str], model: str) -> bool:
        """Whether a request falls in this budget's scope (the spend agent's rule)."""
        return self.tenant == tenant and scope_matches(self.scope, labels, model)


@dataclass(frozen=True)
class GuardRequest:
    """What the gateway knows before forwarding a request."""

    tenant: str
    labels: Mapping[str, str]
    model: str
    prompt_tokens: int
    max_tokens: int
    # Features this caller's key may use to skip budgets that whitelist them (granted per key).
    exempt: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SharedCheck:
    """One budget a request must fit, as the breaker says it now (for reservations shared by a fleet)."""

    budget_id: str
    limit_nanos: int
    confirmed_nanos: int  # the breaker's spend (0 once its calendar period ended)
    covered_us: int  # the breaker's event-time watermark, epoch µs: completions up to it are in its spend
    fail_open: bool


@dataclass(frozen=True)
class Decision:
    """The answer for one request. ``ticket`` must be completed or released when admitted."""

    action: Action
    model: str
    max_tokens: int
    reason: str = ""
    budget_id: str | None = None
    retry_after_s: int | None = None
    ticket: int | None = None
    remaining_nanos: int | None = None  # the least any matching budget had left before this request (nano-USD)
    # With shared reservations (gateway fleets): what the shared store must still check.
    worst_nanos: int = 0
    budgets: tuple[SharedCheck, ...] = ()

    @property
    def admitted(self) -> bool:
        """Whether the request may go upstream."""
        return self.action in ("allow", "downgrade")


# (prompt tokens, max output tokens, model, now) -> worst-case cost in nano-USD
WorstCase = Callable[[str, int, int, datetime], int]


@dataclass
class _Local:
    """This gateway's spend the breaker may not include yet, per budget."""

    inflight: dict[int, int] = field(default_factory=dict)  # ticket -> reserved nano-USD
    unconfirmed: list[tuple[datetime, float, int]] = field(default_factory=list)  # (event time, done mono, nanos)
    inflight_total: int = 0  # running sums: a decision must not scan every open request
    unconfirmed_total: int = 0

    def reserve(self, ticket: int, nanos: int) -> None:
        self.inflight[ticket] = nanos
        self.inflight_total += nanos

    def unreserve(self, ticket: int) -> None:
        self.inflight_total -= self.inflight.pop(ticket, 0)

    def confirm(self, keep: Callable[[tuple[datetime, float, int]], bool]) -> None:
        self.unconfirmed = [u for u in self.unconfirmed if keep(u)]
        self.unconfirmed_total = sum(u[2] for u in self.unconfirmed)


class Guard:
    """Thread-safe decision state shared by the breaker consumer and the request handlers."""

    def __init__(
        self,
        worst_case: WorstCase,
        *,
        stale_after_s: float = 10.0,
        hold_s: float = 5.0,
        headroom_share: Decimal = Decimal(1),
        reservations: bool = True,
    ) -> None:
        """Create an empty guard.

        Args:
            worst_case: Prices a request's worst case (used for reservations).
            stale_after_s: Feed age after which fail-open/fail-closed applies.
            hold_s: How long a completion stays counted after a newer breaker arrived.
            headroom_share: Share of the remaining headroom this instance may reserve (1/G).
            reservations: Off only to measure what breakers alone would overshoot.
        """
        self._worst_case = worst_case
        self._stale_after = stale_after_s
        self._hold = hold_s
        self._share = headroom_share
        self._reservations = reservations
        self._lock = threading.Lock()
        self._breakers: dict[str, BreakerView] = {}
        # A request looks at its tenant's budgets filed under no anchor (tenant-wide) or under one of
        # its own label values (tokenledger.control.state.anchor_of): not at every budget.
        self._by_tenant: dict[str, dict[Anchor, dict[str, BreakerView]]] = {}
        self._received: dict[str, float] = {}
        self._local: dict[str, _Local] = {}
        self._tickets = itertools.count(1)
        self._ticket_budgets: dict[int, tuple[str, ...]] = {}
        self._contact: float | None = None
        self.bootstrapped = False

    # -- feed side ---------------------------------------------------------------------
    def apply(self, doc: Mapping[str, Any] | None, budget_id: str, mono: float) -> BreakerView | None:
        """Fold one breaker message (``None`` = tombstone) received at ``mono``."""
        view = BreakerView.from_json(doc) if doc is not None else None
        with self._lock:
            self._contact = mono
            old = self._breakers.pop(budget_id, None)
            if old is not None:
                self._by_tenant.get(old.tenant, {}).get(anchor_of(old.scope), {}).pop(budget_id, None)
            if view is None:
                return None
            self._breakers[budget_id] = view
            self._by_tenant.setdefault(view.tenant, {}).setdefault(anchor_of(view.scope), {})[budget_id] = view
            self._received[budget_id] = mono
            local = self._local.get(budget_id)
            if local is not None and local.unconfirmed:
                # Completions the breaker now includes (newer event time, held long enough).
                local.confirm(lambda u: not (view.updated_at >= u[0] and mono - u[1] >= self._hold))
        return view

    def touch(self, mono: float) -> None:
        """Record contact with the broker (the feed is alive even without new messages)."""
        with self._lock:
            self._contact = mono

    def breakers(self) -> dict[str, BreakerView]:
        """A snapshot of the known breakers."""
        with self._lock:
            return dict(self._breakers)

    # -- request side ------------------------------------------------------------------
    def decide(self, req: GuardRequest, now: datetime, mono: float, rand: float) -> Decision:
        """Decide one request; admitted requests hold a reservation under ``ticket``.

        Args:
            req: The request (attribution, model, prompt tokens, max output tokens).
            now: Request time (aware), compared with period ends.
            mono: Monotonic seconds, compared with the feed's last contact.
            rand: Uniform in [0, 1), the throttle rule's draw.
        """
        with self._lock:
            stale = not self.bootstrapped or self._contact is None or mono - self._contact > self._stale_after
            filed = self._by_tenant.get(req.tenant)
            views = [] if filed is None else _candidates(filed, req)
            feature = req.labels.get("feature", "")
            best = Decision("allow", req.model, req.max_tokens)
            model, max_tokens = req.model, req.max_tokens
            # Pass 1: state-based answers (deny / throttle / downgrade), most severe wins.
            for v in views:
                if feature in v.whitelist_features and feature in req.exempt:
                    continue
                d = self._by_state(v, req, now, stale, rand)
                if _SEVERITY[d.action] > _SEVERITY[best.action]:
                    best = d
                if d.action == "downgrade":
                    if v.downgrade_model and model == req.model:  # a budget without one keeps another's downgrade
                        model = v.downgrade_model
                    max_tokens = min(max_tokens, d.max_tokens)
            if not best.admitted:
                return best
            # Pass 2: the worst case of what would actually be sent must fit every budget.
            worst = self._worst_case(model, req.prompt_tokens, max_tokens, now) if views else 0
            if (
                not self._reservations
            ):  # a fleet: the shared store checks and reserves (producers.gateway.shared_budgets)
                checks = tuple(
                    SharedCheck(
                        v.budget_id,
                        v.limit_nanos,
                        self._confirmed(v, now),
                        (v.updated_at - _EPOCH) // _MICROSECOND,
                        v.fail_open,
                    )
                    for v in views
                    if not (feature in v.whitelist_features and feature in req.exempt)
                )
                lefts = [max(0, c.limit_nanos - c.confirmed_nanos) for c in checks]
                ticket = next(self._tickets)
                action_s: Action = "downgrade" if (model, max_tokens) != (req.model, req.max_tokens) else "allow"
                return Decision(
                    action_s,
                    model,
                    max_tokens,
                    best.reason,
                    best.budget_id,
                    None,
                    ticket,
                    min(lefts, default=None),
                    worst,
                    checks,
                )
            remaining: int | None = None
            for v in views:
                if (feature in v.whitelist_features and feature in req.exempt) or not self._reservations:
                    continue
                spend = self._spend(v, now)
                headroom = self._headroom(v, now)
                left = max(0, v.limit_nanos - spend)
                remaining = left if remaining is None else min(remaining, left)
                if spend + worst > headroom:
                    return Decision(
                        "deny",
                        model,
                        max_tokens,
                        f"budget {v.budget_id}: worst case {worst} nano-USD does not fit the remaining "
                        f"{max(0, headroom - spend)} nano-USD",
                        v.budget_id,
                        _retry_after(v, now),
                    )
            ticket = next(self._tickets)
            ids = tuple(v.budget_id for v in views) if self._reservations else ()
            self._ticket_budgets[ticket] = ids
            for budget_id in ids:
                self._local.setdefault(budget_id, _Local()).reserve(ticket, worst)
            action: Action = "downgrade" if (model, max_tokens) != (req.model, req.max_tokens) else "allow"
            return Decision(action, model, max_tokens, best.reason, best.budget_id, None, ticket, remaining)

    def complete(self, ticket: int, cost_nanos: int, event_time: datetime, mono: float) -> None:
        """Replace a reservation by the request's actual cost (until a breaker includes it)."""
        with self._lock:
            for budget_id in self._ticket_budgets.pop(ticket, ()):
                local = self._local.setdefault(budget_id, _Local())
                local.unreserve(ticket)
                if cost_nanos:
                    local.unconfirmed.append((event_time, mono, cost_nanos))
                    local.unconfirmed_total += cost_nanos

    def release(self, ticket: int) -> None:
        """Drop a reservation of a request that cost nothing (upstream refused it)."""
        with self._lock:
            for budget_id in self._ticket_budgets.pop(ticket, ()):
                self._local.get(budget_id, _Local()).unreserve(ticket)

    def local_nanos(self, budget_id: str) -> tuple[int, int]:
        """``(in-flight reserved, unconfirmed completed)`` nano-USD for a budget."""
        with self._lock:
            local = self._local.get(budget_id, _Local())
            return local.inflight_total, local.unconfirmed_total

    # -- internals (lock held) -----------------------------------------------------------
    def _confirmed(self, v: BreakerView, now: datetime) -> int:
        return 0 if v.ended(now) else v.spent_nanos

    def _spend(self, v: BreakerView, now: datetime) -> int:
        local = self._local.get(v.budget_id)
        if local is None:
            return self._confirmed(v, now)
        if v.ended(now) and v.period_end is not None:  # a new period: only what belongs to it
            unconfirmed = sum(n for t, _, n in local.unconfirmed if t >= v.period_end)
            return unconfirmed + local.inflight_total
        return v.spent_nanos + local.unconfirmed_total + local.inflight_total

    def _headroom(self, v: BreakerView, now: datetime) -> int:
        """The spend this instance may reach: confirmed + its share of what remains."""
        confirmed = self._confirmed(v, now)
        remaining = max(0, v.limit_nanos - confirmed)
        return confirmed + int(Decimal(remaining) * self._share)

    def _by_state(self, v: BreakerView, req: GuardRequest, now: datetime, stale: bool, rand: float) -> Decision:
        if stale and not v.fail_open:
            return Decision(
                "deny",
                req.model,
                req.max_tokens,
                f"budget {v.budget_id}: budget state unavailable (fail-closed)",
                v.budget_id,
                UNAVAILABLE_RETRY_S,
            )
        spend = self._spend(v, now)
        state = "normal" if v.ended(now) else v.state
        if state == "broken" or spend >= v.limit_nanos:
            return Decision(
                "deny",
                req.model,
                req.max_tokens,
                f"budget {v.budget_id} exhausted: spent {spend} of {v.limit_nanos} nano-USD",
                v.budget_id,
                _retry_after(v, now),
            )
        downgraded = Decision(
            "downgrade",
            v.downgrade_model or req.model,
            min(req.max_tokens, v.max_tokens_per_request or req.max_tokens),
            f"budget {v.budget_id} is {state}",
            v.budget_id,
        )
        if state == "throttled" or spend >= v.throttle_nanos:
            span = max(1, v.limit_nanos - v.throttle_nanos)
            p = max(0.0, min(1.0, (v.limit_nanos - spend) / span))
            if rand >= p:
                return Decision(
                    "throttle",
                    req.model,
                    req.max_tokens,
                    f"budget {v.budget_id} throttled: admitting {p:.0%} of requests",
                    v.budget_id,
                    THROTTLE_RETRY_S,
                )
            return downgraded
        if state == "warning":
            return downgraded
        return Decision("allow", req.model, req.max_tokens)


def _candidates(filed: Mapping[Anchor, dict[str, BreakerView]], req: GuardRequest) -> list[BreakerView]:
    """The tenant's budgets the request falls in, in budget id order."""
    found = [v for v in filed.get(None, {}).values() if v.matches(req.tenant, req.labels, req.model)]
    for probe in probes(req.labels, req.model):
        for v in filed.get(probe, {}).values():
            if v.matches(req.tenant, req.labels, req.model):
                found.append(v)
    found.sort(key=lambda v: v.budget_id)
    return found


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _retry_after(v: BreakerView, now: datetime) -> int:
    """Seconds until the budget's period ends (rolling windows: a re-check interval)."""
    if v.period_end is None:
        return ROLLING_RETRY_S
    return max(1, int((v.period_end - now).total_seconds()) + 1)
