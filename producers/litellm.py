"""LiteLLM: one usage event per call (SDK and proxy), and tokenledger budgets enforced before a call.

SDK::

    import litellm
    from producers.litellm import TokenledgerLogger
    litellm.callbacks = [TokenledgerLogger(publisher.publish, Attribution("//svc/agent", {"tenant": "acme"}))]

Proxy (``config.yaml``: ``litellm_settings: {callbacks: my_hooks.tokenledger}``, where
``my_hooks.py`` builds the logger with a started :class:`~producers.breaker_client.BreakerClient`'s
guard): every call is logged, and ``async_pre_call_hook`` asks the budgets first. A denied call
fails with LiteLLM's ``RateLimitError`` (HTTP 429 from the proxy, with the budget and the
seconds to wait); a downgraded one goes out with the budget's cheaper model and capped
``max_tokens``. The reservation an admitted call holds is settled with its priced cost when it
succeeds, released when it fails, exactly as in the reference gateway.

Usage comes from the response LiteLLM returns (``usage``: prompt and completion tokens, cached
prompt tokens, Anthropic cache reads and writes, reasoning tokens); the request id is the
provider's response id, else LiteLLM's call id, so a call is published once even if both the
sync and the async success hooks fire. Labels: the logger's attribution, the call's ``user``,
and ``metadata={"tokenledger": {"department": ..., "project": ...}}`` per call; on the proxy,
the key's user and team (``user_api_key_user_id``, ``user_api_key_team_alias``) by default.
Needs ``litellm`` (``pip install tokenledger[litellm]``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import litellm
from litellm.exceptions import RateLimitError
from litellm.integrations.custom_logger import CustomLogger

from producers.events import Attribution, EventFactory, Recent, TokenUsage
from tokenledger.guard import Decision, Guard, GuardRequest
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, price
from tokenledger.schema import UsageEventV1

TICKET = "tokenledger_ticket"  # in a call's metadata: the guard reservation to settle
PROXY_LABELS = {"user": "user_api_key_user_id", "department": "user_api_key_team_alias"}


class BudgetExceeded(RateLimitError):
    """A tokenledger budget refused the call (the proxy answers 429)."""


class TokenledgerLogger(CustomLogger):
    """Publishes every LiteLLM call's usage; with a guard, decides calls before they go out."""

    def __init__(
        self,
        emit: Callable[[UsageEventV1], None],
        who: Attribution,
        factory: EventFactory | None = None,
        *,
        guard: Guard | None = None,
        default_max_tokens: int = 4_096,
        proxy_labels: Mapping[str, str] = PROXY_LABELS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__()
        self._emit, self._who, self._factory = emit, who, factory or EventFactory()
        self._guard, self._default_max_tokens = guard, default_max_tokens
        self._proxy_labels, self._clock = dict(proxy_labels), clock
        self._table = CachedPriceTable(LayeredPriceTable.from_path()) if guard is not None else None
        self._lock = threading.Lock()
        self._published: Recent[str] = Recent()  # bounded: the pipeline de-duplicates anyway

    @property
    def published(self) -> frozenset[str]:
        """Request ids published so far (LiteLLM runs success hooks on threads and tasks)."""
        with self._lock:
            return frozenset(self._published)

    # Success and failure: SDK (sync and async) and proxy.
    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        """A sync call succeeded."""
        self._publish(kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """An async or proxy call succeeded."""
        self._publish(kwargs, response_obj)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        """A sync call failed: nothing to bill; its reservation goes."""
        self._release(kwargs)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """An async or proxy call failed: nothing to bill; its reservation goes."""
        self._release(kwargs)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        """Proxy: ask the budgets before the call; deny raises, downgrade swaps model and ``max_tokens``."""
        if self._guard is None or call_type not in ("completion", "acompletion"):
            return data
        model = str(data.get("model", ""))
        metadata = data.setdefault("metadata", {})
        labels = self._labels(data.get("user"), metadata, user_api_key_dict)
        messages = data.get("messages") or []
        prompt_tokens = int(litellm.token_counter(model=model, messages=messages)) if messages else 0
        asked = data.get("max_completion_tokens") or data.get("max_tokens")
        max_tokens = int(asked) if isinstance(asked, int) and asked > 0 else self._default_max_tokens
        request = GuardRequest(labels["tenant"], labels, _bare(model), prompt_tokens, max_tokens)
        decision: Decision = self._guard.decide(request, self._clock(), time.monotonic(), _draw())
        if not decision.admitted or decision.ticket is None:
            wait = f"; retry after {decision.retry_after_s} s" if decision.retry_after_s else ""
            raise BudgetExceeded(
                message=f"tokenledger budget {decision.budget_id}: {decision.action} ({decision.reason}){wait}",
                llm_provider="tokenledger",
                model=model,
            )
        metadata[TICKET] = decision.ticket
        if decision.action == "downgrade":
            data["model"] = decision.model
            data.pop("max_completion_tokens", None)
            data["max_tokens"] = decision.max_tokens
        return data

    def _publish(self, kwargs: dict[str, Any], response: Any) -> None:
        usage = getattr(response, "usage", None)
        if usage is None:
            return  # embeddings without usage, images...: nothing to bill from
        params = kwargs.get("litellm_params") or {}
        metadata = params.get("metadata") or {}
        request_id = str(getattr(response, "id", None) or kwargs.get("litellm_call_id") or "")
        with self._lock:
            if not request_id or not self._published.add(request_id):
                return
        provider = str(params.get("custom_llm_provider") or kwargs.get("custom_llm_provider") or "openai")
        model = _bare(str(getattr(response, "model", None) or kwargs.get("model") or ""))
        labels = self._labels(kwargs.get("user") or (kwargs.get("optional_params") or {}).get("user"), metadata, None)
        who = Attribution(self._who.source, labels, batch=self._who.batch)
        event = self._factory.make(
            who, provider=provider, model=model, request_id=request_id, usage=_token_usage(usage)
        )
        self._emit(event)
        ticket = metadata.get(TICKET)
        if self._guard is not None and ticket is not None and self._table is not None:
            cost = price(event.data, event.time, self._table).total_nanos
            self._guard.complete(int(ticket), cost, event.time, time.monotonic())

    def _release(self, kwargs: dict[str, Any]) -> None:
        metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
        ticket = metadata.get(TICKET)
        if self._guard is not None and ticket is not None:
            self._guard.release(int(ticket))

    def _labels(self, user: Any, metadata: Mapping[str, Any], key: Any) -> dict[str, str]:
        """The logger's labels, then the proxy key's, then the call's own (the most specific wins)."""
        labels = dict(self._who.labels)
        for label, field in self._proxy_labels.items():
            value = metadata.get(field) or (getattr(key, field, None) if key is not None else None)
            if value:
                labels[label] = str(value)
        if user:
            labels["user"] = str(user)
        labels.update({k: str(v) for k, v in (metadata.get("tokenledger") or {}).items() if v})
        return labels


def _token_usage(usage: Any) -> TokenUsage:
    """LiteLLM's ``Usage`` as tokenledger counts (input includes cache reads and writes)."""
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
    cached = max(cached, int(getattr(usage, "cache_read_input_tokens", 0) or 0))
    written = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    out_details = getattr(usage, "completion_tokens_details", None)
    reasoning = int(getattr(out_details, "reasoning_tokens", 0) or 0) if out_details is not None else 0
    return TokenUsage(
        input_tokens=prompt,
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cached_read_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )


def _bare(model: str) -> str:
    """``openai/gpt-4o`` -> ``gpt-4o``: prices and budgets name models without LiteLLM's provider prefix."""
    return model.split("/", 1)[1] if "/" in model else model


def _draw() -> float:
    """The throttle rule's draw (the rule itself is tested with seeded draws in ``tokenledger.guard``)."""
    return random.random()
