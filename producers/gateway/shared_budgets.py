"""Budget reservations shared by a fleet of gateways through Redis: no static split of the headroom.

A single gateway keeps its in-flight worst cases and its completed-but-not-yet-confirmed costs
in process (:class:`tokenledger.guard.Guard`). A fleet keeps them in Redis, per budget, so
every gateway sees every other's: a request is admitted when, for each budget it falls in,

    breaker spend + every gateway's in-flight worst cases + completions the breaker does not cover yet
    + this request's worst case <= the limit,

checked and reserved for all its budgets in one Lua script (atomic: two gateways never both take
the last headroom). A completion replaces its reservation by its cost, which stays counted
until a breaker covers it (its event time at or before the breaker's event-time watermark,
received ``hold_s`` after the completion: the rule the in-process guard uses). So the fleet
overshoots a budget by at most what one request's actual cost exceeds the spend the breaker
and the store account for, not by a share per gateway. A reservation of a gateway killed with
-9 expires after ``ttl_s``. When Redis does not answer, a budget with ``fail_open`` admits,
any other refuses (fail-closed), as for the rate limits.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from producers.gateway.redis_limits import STORE_ERRORS
from producers.gateway.redis_limits import log as limits_log
from tokenledger.guard import Decision
from tokenledger.outage import Outage

log = logging.getLogger("tokenledger.gateway.limits")
PREFIX = "tl:bud:"

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local worst, ticket, ttl, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 4
for i = 0, n - 1 do
  local res, amt, done, sums = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local limit, confirmed, covered = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i]), tonumber(ARGV[7 + 3 * i])
  for _, tk in ipairs(redis.call('ZRANGEBYSCORE', res, '-inf', now)) do
    local a = tonumber(redis.call('HGET', amt, 'r:' .. tk) or '0')
    redis.call('HINCRBY', sums, 'inflight', -a)
    redis.call('HDEL', amt, 'r:' .. tk)
    redis.call('ZREM', res, tk)
  end
  for _, tk in ipairs(redis.call('ZRANGEBYSCORE', done, '-inf', covered)) do
    if tonumber(redis.call('HGET', amt, 't:' .. tk) or '0') <= now - hold then
      local a = tonumber(redis.call('HGET', amt, 'd:' .. tk) or '0')
      redis.call('HINCRBY', sums, 'done', -a)
      redis.call('HDEL', amt, 'd:' .. tk, 't:' .. tk)
      redis.call('ZREM', done, tk)
    end
  end
  local used = confirmed + tonumber(redis.call('HGET', sums, 'inflight') or '0')
  used = used + tonumber(redis.call('HGET', sums, 'done') or '0')
  if used + worst > limit then
    return {0, i + 1, tostring(math.max(0, limit - used))}
  end
end
for i = 0, n - 1 do
  redis.call('ZADD', KEYS[4 * i + 1], now + ttl, ticket)
  redis.call('HSET', KEYS[4 * i + 2], 'r:' .. ticket, worst)
  redis.call('HINCRBY', KEYS[4 * i + 4], 'inflight', worst)
  for j = 1, 4 do redis.call('EXPIRE', KEYS[4 * i + j], 3 * 86400) end
end
return {1, 0, '0'}
"""

SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ticket, cost, event_us = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, #KEYS / 4 - 1 do
  local res, amt, done, sums = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  if redis.call('ZREM', res, ticket) == 1 then
    redis.call('HINCRBY', sums, 'inflight', -tonumber(redis.call('HGET', amt, 'r:' .. ticket) or '0'))
    redis.call('HDEL', amt, 'r:' .. ticket)
  end
  if cost > 0 then
    redis.call('ZADD', done, event_us, ticket)
    redis.call('HSET', amt, 'd:' .. ticket, cost, 't:' .. ticket, tostring(now))
    redis.call('HINCRBY', sums, 'done', cost)
  end
end
return 1
"""


def _keys(budget_ids: list[str]) -> list[str]:
    out = []
    for bid in budget_ids:
        base = f"{PREFIX}{{{bid}}}:"  # one hash slot per budget
        out += [base + "res", base + "amt", base + "done", base + "sums"]
    return out


class SharedBudgets:
    """Budget reservations of a gateway fleet in Redis (see the module doc)."""

    def __init__(self, url: str, *, timeout_s: float = 1.0, ttl_s: float = 600.0, hold_s: float = 1.0) -> None:
        self.url = url
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._reserve = self._redis.register_script(RESERVE)
        self._settle = self._redis.register_script(SETTLE)
        self._ttl, self._hold = ttl_s, hold_s
        self._outage = Outage("budget reservation store", url, "budgets fail open or closed", logger=limits_log)

    async def reserve(self, d: Decision, ticket: str) -> tuple[bool, str]:
        """Reserve the decision's worst case in each of its budgets, or say which one it does not fit."""
        if not d.budgets:
            return True, ""
        args: list[str | int | float] = [d.worst_nanos, ticket, self._ttl, self._hold]
        for c in d.budgets:
            args += [c.limit_nanos, c.confirmed_nanos, c.covered_us]
        try:
            res = await self._reserve(keys=_keys([c.budget_id for c in d.budgets]), args=args)
        except (RedisError, OSError) as exc:
            self._down(exc)
            closed = [c.budget_id for c in d.budgets if not c.fail_open]
            STORE_ERRORS.labels("fail_closed" if closed else "fail_open").inc()
            if closed:
                return False, f"budget {closed[0]}: the shared reservation store does not answer (fail-closed)"
            return True, ""
        self._up()
        if int(res[0]) == 1:
            return True, ""
        c = d.budgets[int(res[1]) - 1]
        return (
            False,
            f"budget {c.budget_id}: worst case {d.worst_nanos} nano-USD does not fit the remaining {res[2]} nano-USD",
        )

    async def settle(self, d: Decision, ticket: str, cost_nanos: int, event_us: int) -> None:
        """Replace the reservation by the cost (0: released), counted until a breaker covers it."""
        if not d.budgets:
            return
        try:
            await self._settle(keys=_keys([c.budget_id for c in d.budgets]), args=[ticket, cost_nanos, event_us])
        except (RedisError, OSError) as exc:
            self._down(exc)  # the reservation lapses with its TTL

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    def _down(self, exc: BaseException) -> None:
        self._outage.down(exc)

    def _up(self) -> None:
        self._outage.up()
