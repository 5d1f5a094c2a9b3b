"""Rate limits shared by a fleet of gateways through Redis (or Valkey): one Lua script per decision.

The buckets of :mod:`tokenledger.ratelimit`, kept in Redis: a GCRA bucket is one key holding its
theoretical arrival time (seconds on Redis's own clock, ``TIME``, so gateways' clocks never
matter), expiring when the bucket is full again; a concurrency limit is a sorted set of the
tickets in flight, scored by when each expires (``slot_ttl_s``), so a gateway killed with -9
leaves slots that lapse on their own. :data:`ADMIT` checks every bucket and slot of a request
and charges them only if all admit: atomic, so N gateways together admit what one would.
Floats travel as strings (Redis truncates Lua numbers to integers on return).

When Redis does not answer within ``timeout_s``, each limit does what it says: ``fail_open``
admits (uncounted), otherwise the request is refused as unavailable. The outage is logged once
when it starts and once when it ends, with its length; every affected decision is counted in
``tokenledger_ratelimit_store_errors_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tokenledger import metrics
from tokenledger.outage import Outage
from tokenledger.ratelimit import BucketState, Charge, Plan, Verdict, refusal

log = logging.getLogger("tokenledger.gateway.limits")
PREFIX = "tl:rl:"
STORE_ERRORS = metrics.RATELIMIT_STORE_ERRORS

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nc, ns, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local out, tats, i = {}, {}, 5
for k = 1, nc do
  local cost, limit, period = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local interval = period / limit
  local base = math.max(tonumber(redis.call('GET', KEYS[k]) or '0'), now)
  local new = base + cost * interval
  if new - now > period + 1e-9 then
    local remaining = math.max(0, math.floor((period - (base - now)) / interval + 1e-9))
    local retry = -1
    if cost <= limit then retry = new - now - period end
    return {0, k, tostring(retry), remaining, tostring(base - now)}
  end
  tats[k] = new
  out[#out + 1] = math.max(0, math.floor((period - (new - now)) / interval + 1e-9))
  out[#out + 1] = tostring(new - now)
end
for s = 1, ns do
  local key, limit = KEYS[nc + s], tonumber(ARGV[i])
  i = i + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, nc + s, tostring(math.min(1, tonumber(first[2]) - now)), 0, '0'}
  end
end
for k = 1, nc do
  redis.call('SET', KEYS[k], tostring(tats[k]), 'PX', math.ceil((tats[k] - now) * 1000) + 1000)
end
for s = 1, ns do
  redis.call('ZADD', KEYS[nc + s], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[nc + s], math.ceil(ttl * 1000) + 1000)
end
return {1, 0, '0', 0, '0', unpack(out)}
"""

CORRECT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local nc = tonumber(ARGV[1])
for s = nc + 1, #KEYS do
  redis.call('ZREM', KEYS[s], ARGV[2])
end
for k = 1, nc do
  local tat = redis.call('GET', KEYS[k])
  if tat then
    local delta = tonumber(ARGV[k + 2])
    local new = tonumber(tat) + delta
    if delta < 0 and new < now then new = now end
    if new > now then
      redis.call('SET', KEYS[k], tostring(new), 'PX', math.ceil((new - now) * 1000) + 1000)
    else
      redis.call('DEL', KEYS[k])
    end
  end
end
return 1
"""


class RedisLimits:
    """The shared buckets of a gateway fleet (see the module doc)."""

    def __init__(self, url: str, *, timeout_s: float = 1.0, slot_ttl_s: float = 600.0) -> None:
        self.url = url
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._admit = self._redis.register_script(ADMIT)
        self._correct = self._redis.register_script(CORRECT)
        self._ttl = slot_ttl_s
        self._outage = Outage("rate-limit store", url, "limits fail open or closed as configured", logger=log)

    async def admit(self, p: Plan, ticket: str) -> Verdict:
        """Check and charge every bucket of ``p`` in one script (fail open or closed when Redis is away)."""
        if p.empty:
            return Verdict(True)
        keys = [PREFIX + c.key for c in p.charges] + [PREFIX + s.key for s in p.slots]
        args: list[Any] = [len(p.charges), len(p.slots), ticket, self._ttl]
        for c in p.charges:
            args += [c.cost, c.limit, c.period_s]
        args += [s.limit for s in p.slots]
        try:
            res = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            return self._without_store(p, exc)
        self._up()
        if int(res[0]) == 1:
            flat = res[5:]
            states = tuple(BucketState(c, int(flat[2 * i]), float(flat[2 * i + 1])) for i, c in enumerate(p.charges))
            return Verdict(True, states)
        index = int(res[1]) - 1
        retry = float(res[2])
        if index < len(p.charges):
            c = p.charges[index]
            state = (BucketState(c, int(res[3]), float(res[4])),)
            wait = c.period_s if retry < 0 else retry
            return Verdict(False, state, c.limit_id, c.kind, wait, refusal(c, retry < 0))
        s = p.slots[index - len(p.charges)]
        why = f"rate limit {s.limit_id}: {s.limit} concurrent requests in flight"
        return Verdict(False, (), s.limit_id, "concurrent", max(retry, 0.05), why)

    async def correct(self, charges: Sequence[tuple[Charge, int]]) -> None:
        """Move buckets by ``(actual - reserved) * T`` (unused reservations come back)."""
        await self.finish(Plan(), charges, "")

    async def finish(self, p: Plan, charges: Sequence[tuple[Charge, int]], ticket: str) -> None:
        """A completed request in one round trip: buckets moved by what was not used, its slots freed."""
        moved = [(c, (actual - c.cost) * c.interval) for c, actual in charges if actual != c.cost]
        slots = [PREFIX + s.key for s in p.slots] if ticket else []
        if not moved and not slots:
            return
        keys = [PREFIX + c.key for c, _ in moved] + slots
        try:
            await self._correct(keys=keys, args=[len(moved), ticket, *(delta for _, delta in moved)])
        except (RedisError, OSError) as exc:
            self._down(exc)  # buckets refill on their own; slots lapse with their TTL

    async def release(self, p: Plan, ticket: str) -> None:
        """Free the request's concurrency slots."""
        if not p.slots:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for s in p.slots:
                    pipe.zrem(PREFIX + s.key, ticket)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down(exc)  # the slots lapse with their TTL

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    def _without_store(self, p: Plan, exc: BaseException) -> Verdict:
        self._down(exc)
        closed = [c.limit_id for c in p.charges if not c.fail_open] + [s.limit_id for s in p.slots if not s.fail_open]
        if not closed:
            STORE_ERRORS.labels("fail_open").inc()
            return Verdict(True)
        STORE_ERRORS.labels("fail_closed").inc()
        return Verdict(
            False,
            (),
            closed[0],
            "unavailable",
            1.0,
            f"rate limit {closed[0]}: the shared limit store does not answer (fail-closed)",
            unavailable=True,
        )

    def _down(self, exc: BaseException) -> None:
        self._outage.down(exc)

    def _up(self) -> None:
        self._outage.up()


class LocalLimits:
    """:class:`tokenledger.ratelimit.LocalLimiter` behind the same async interface (one gateway, no Redis)."""

    def __init__(self, slot_ttl_s: float = 600.0) -> None:
        from tokenledger.ratelimit import LocalLimiter  # noqa: PLC0415

        self.limiter = LocalLimiter(ttl_s=slot_ttl_s)

    async def admit(self, p: Plan, ticket: str) -> Verdict:
        """Check and charge in process."""
        return Verdict(True) if p.empty else self.limiter.admit(p, ticket, time.monotonic())

    async def correct(self, charges: Sequence[tuple[Charge, int]]) -> None:
        """Move buckets by what was not used."""
        self.limiter.correct(charges, time.monotonic())

    async def finish(self, p: Plan, charges: Sequence[tuple[Charge, int]], ticket: str) -> None:
        """Correct the buckets and free the slots of a completed request."""
        self.limiter.correct(charges, time.monotonic())
        self.limiter.release(p, ticket)

    async def release(self, p: Plan, ticket: str) -> None:
        """Free the concurrency slots."""
        self.limiter.release(p, ticket)

    async def close(self) -> None:
        """Nothing to close."""
