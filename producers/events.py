"""Build v1 usage events. Identity rules shared by every adapter.

* event id: ``<request_id>:final`` for the final figure, ``<request_id>:est:<seq>`` for a
  running estimate, so a retried publish of the same event keeps its identity;
* Kafka key: ``<source>|<request_id>``, so every event of one request lands in one partition
  (where the pricing agent remembers what it priced).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from tokenledger.identity import placement_key
from tokenledger.schema import EVENT_TYPE_V1, Labels, UsageDataV1, UsageEventV1

K = TypeVar("K")


@dataclass(frozen=True)
class Attribution:
    """Who a call is billed to, and where it sits in a trace."""

    source: str
    labels: Mapping[str, str]
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    batch: bool = False


@dataclass(frozen=True)
class TokenUsage:
    """Normalised counts (input includes cached read/write; output includes reasoning)."""

    input_tokens: int
    output_tokens: int
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def utc_now() -> datetime:
    """Default clock."""
    return datetime.now(UTC)


@dataclass
class EventFactory:
    """Makes events with an injected clock."""

    clock: Callable[[], datetime] = field(default=utc_now)

    def make(
        self,
        who: Attribution,
        *,
        provider: str,
        model: str,
        request_id: str,
        usage: TokenUsage,
        estimated: bool = False,
        final: bool = True,
        seq: int = 0,
        at: datetime | None = None,
    ) -> UsageEventV1:
        """One validated event (raises ``pydantic.ValidationError`` on bad input)."""
        event_id = f"{request_id}:final" if final else f"{request_id}:est:{seq}"
        return UsageEventV1(
            specversion="1.0",
            id=event_id,
            source=who.source,
            type=EVENT_TYPE_V1,
            time=at or self.clock(),
            subject=who.labels.get("tenant"),
            data=UsageDataV1(
                provider=provider,
                model=model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_read_tokens=usage.cached_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                usage_source="estimated" if estimated else "provider",
                stream_seq=seq,
                final=final,
                batch=who.batch,
                request_id=request_id,
                trace_id=who.trace_id,
                span_id=who.span_id,
                parent_span_id=who.parent_span_id,
                labels=Labels(**dict(who.labels)),
            ),
        )


def kafka_key(event: UsageEventV1) -> bytes:
    """Partition key of an event: its request's home partition (``tokenledger.identity.placement_key``)."""
    return placement_key(event)


class Recent(Generic[K]):
    """The last ``capacity`` keys seen (insertion order), for callbacks that must not grow forever.

    A callback remembers what it published so that a hook fired twice publishes once; the
    pipeline de-duplicates requests anyway, so forgetting the oldest only costs a harmless
    duplicate message, never a double bill.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._keys: OrderedDict[K, None] = OrderedDict()
        self._capacity = capacity

    def add(self, key: K) -> bool:
        """Remember ``key``; ``False`` if it was already there."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[K]:
        return iter(self._keys)
