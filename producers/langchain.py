"""LangChain callback: one usage event per LLM or chat-model call, from the provider-reported usage.

    from producers.langchain import TokenledgerCallback
    handler = TokenledgerCallback(publisher.publish, Attribution("//svc/agent", {"tenant": "acme"}))
    chain.invoke(inputs, config={"callbacks": [handler]})

Usage comes from the message's ``usage_metadata`` (chat models: input, output, cache read /
creation, reasoning), else from ``llm_output["token_usage"]`` (OpenAI-style completion
models). Provider and model come from LangChain's own run metadata (``ls_provider``,
``ls_model_name``) or the response metadata. Trace attribution: the root run id is the trace
id, the run id the span id, the parent run id the parent span id.

No double count when LangChain retries: a failed attempt reports no usage (``on_llm_error``),
and each run is published at most once; the request id is the provider's response id where
there is one, so a request billed twice by two paths is still billed once downstream.
Needs ``langchain-core`` (``pip install tokenledger[langchain]``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import ChatGeneration, LLMResult

from producers.events import Attribution, EventFactory, Recent, TokenUsage
from tokenledger.schema import UsageEventV1

MAX_OPEN_RUNS = 100_000  # runs started and not ended that are remembered (a leak guard, not a limit)


class TokenledgerCallback(BaseCallbackHandler):
    """Publishes the usage of every LLM call a chain makes."""

    def __init__(
        self,
        emit: Callable[[UsageEventV1], None],
        who: Attribution,
        factory: EventFactory | None = None,
    ) -> None:
        self._emit, self._who, self._factory = emit, who, factory or EventFactory()
        self._lock = threading.Lock()
        self._runs: dict[UUID, dict[str, Any]] = {}  # run -> what its start said
        # Bounded: a run's links go when it ends; the caps only guard against runs that never end.
        self._parents: OrderedDict[UUID, UUID | None] = OrderedDict()
        self._published: Recent[UUID] = Recent()

    def _started(self, run_id: UUID, parent_run_id: UUID | None, metadata: Mapping[str, Any] | None, kw: Any) -> None:
        params = kw.get("invocation_params") or {}
        with self._lock:
            self._link(run_id, parent_run_id)
            self._runs[run_id] = {
                "provider": (metadata or {}).get("ls_provider"),
                "model": (metadata or {}).get("ls_model_name") or params.get("model") or params.get("model_name"),
            }

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the run's provider, model and parent."""
        self._started(run_id, parent_run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the run's provider, model and parent."""
        self._started(run_id, parent_run_id, metadata, kwargs)

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Chains are the trace's inner nodes: remember the parent link."""
        with self._lock:
            self._link(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """A finished chain's runs have ended: its link is no longer needed."""
        with self._lock:
            self._parents.pop(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """As :meth:`on_chain_end`."""
        with self._lock:
            self._parents.pop(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """A failed attempt (LangChain may retry it as a new run) reports no usage."""
        with self._lock:
            self._runs.pop(run_id, None)
            self._parents.pop(run_id, None)

    def _link(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        self._parents[run_id] = parent_run_id
        if len(self._parents) > MAX_OPEN_RUNS:
            self._parents.popitem(last=False)
        if len(self._runs) > MAX_OPEN_RUNS:
            self._runs.pop(next(iter(self._runs)))

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Publish the call's usage once."""
        with self._lock:
            if not self._published.add(run_id):
                return
            started = self._runs.pop(run_id, {})
            root = run_id
            while self._parents.get(root) is not None:
                root = self._parents[root]  # type: ignore[assignment]
            self._parents.pop(run_id, None)
        found = _usage(response)
        if found is None:
            return  # the provider reported no usage: nothing to bill from
        usage, meta = found
        provider = started.get("provider") or meta.get("model_provider") or "openai"
        model = meta.get("model_name") or meta.get("model") or started.get("model")
        if not model:
            return
        who = Attribution(
            self._who.source,
            self._who.labels,
            trace_id=root.hex,
            span_id=run_id.hex,
            parent_span_id=parent_run_id.hex if parent_run_id else None,
            batch=self._who.batch,
        )
        request_id = meta.get("id") or str(run_id)
        self._emit(
            self._factory.make(who, provider=str(provider), model=str(model), request_id=request_id, usage=usage)
        )


def _provider_id(*candidates: Any) -> str | None:
    """The first id that is not one LangChain made up (``lc_run--<uuid>``, older ``run-<uuid>``)."""
    for c in candidates:
        if isinstance(c, str) and c and not c.startswith(("lc_", "run-")):
            return c
    return None


def _usage(response: LLMResult) -> tuple[TokenUsage, dict[str, Any]] | None:
    """Token usage and response metadata of a finished call, or None when none was reported."""
    for generations in response.generations:
        for g in generations:
            message: Any = g.message if isinstance(g, ChatGeneration) else None
            um: Any = getattr(message, "usage_metadata", None)
            if um:
                inp = um.get("input_token_details") or {}
                out = um.get("output_token_details") or {}
                meta = dict(getattr(message, "response_metadata", {}) or {})
                # The provider's response id, wherever this LangChain version put it; a streamed
                # call's message id may be LangChain's own ``lc_run--<uuid>``, not the provider's.
                meta["id"] = _provider_id(
                    meta.get("id"), getattr(message, "id", None), (g.generation_info or {}).get("id")
                )
                return (
                    TokenUsage(
                        input_tokens=int(um.get("input_tokens", 0)),
                        output_tokens=int(um.get("output_tokens", 0)),
                        cached_read_tokens=int(inp.get("cache_read", 0) or 0),
                        cache_write_tokens=int(inp.get("cache_creation", 0) or 0),
                        reasoning_tokens=int(out.get("reasoning", 0) or 0),
                    ),
                    meta,
                )
    llm_output = response.llm_output or {}
    tu = llm_output.get("token_usage") or llm_output.get("usage")
    if not tu:
        return None
    return (
        TokenUsage(
            input_tokens=int(tu.get("prompt_tokens", tu.get("input_tokens", 0))),
            output_tokens=int(tu.get("completion_tokens", tu.get("output_tokens", 0))),
        ),
        dict(llm_output),
    )
