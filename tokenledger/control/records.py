"""Control-plane records: tenants, budgets, keys and defaults, as they travel on the control topic.

One compacted topic holds every record, keyed ``<kind>/<id>`` (see :mod:`tokenledger.control.log`).
A value is the record's JSON; a delete is a tombstone (a null value, never empty bytes: only
null is compacted away). Budgets keep the shape of the budgets YAML (:class:`tokenledger.budgets.Budget`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tokenledger.budgets import Budget

KINDS = ("tenant", "budget", "key", "defaults", "fx", "limit")
Kind = Literal["tenant", "budget", "key", "defaults", "fx", "limit"]
_FORBID = ConfigDict(extra="forbid", frozen=True)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # KeyError subclass: pydantic would not report it
        raise ValueError(f"unknown timezone {v!r}") from exc
    return v


class Defaults(BaseModel):
    """Timezone and currency of tenants without a record of their own."""

    model_config = _FORBID
    timezone: str = "UTC"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return _zone(v)


class Tenant(Defaults):
    """A tenant's calendar and currency: its budgets' periods, bills and forecasts follow them."""

    id: str = Field(pattern=ID_PATTERN)
    display_name: str = Field(default="", max_length=200)


def check_grant(features: tuple[str, ...], exempt_features: tuple[str, ...]) -> None:
    """A key may be exempted only for features it may claim (ValueError naming the others)."""
    outside = sorted(set(exempt_features) - set(features))
    if outside:
        raise ValueError(f"exempt_features {outside} are not in features")


class ApiKey(BaseModel):
    """An ingest key, a billing token or a gateway key of one tenant; only the sha256 of the secret is kept.

    A gateway key also carries the attribution of its calls and its grant (what a call may
    claim, see ``producers.gateway.config.GatewayKey``); the other kinds leave those empty.
    """

    model_config = _FORBID
    id: str = Field(pattern=ID_PATTERN)
    tenant: str = Field(pattern=ID_PATTERN)
    kind: Literal["ingest", "billing", "gateway"]
    name: str = Field(default="", max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime | None = None
    department: str = Field(default="", max_length=128)
    project: str = Field(default="", max_length=128)
    environment: str = Field(default="", max_length=128)
    features: tuple[str, ...] = ()
    exempt_features: tuple[str, ...] = ()
    user_from: Literal["key", "header", "body"] = "key"
    user: str = Field(default="", max_length=128)
    user_header: str = Field(default="X-Tokenledger-User", max_length=128)

    @model_validator(mode="after")
    def _grant(self) -> ApiKey:
        check_grant(self.features, self.exempt_features)
        return self


class ControlBudget(Budget):
    """A budget as the control plane holds it.

    ``counts_from``: a budget created while the pipeline runs counts priced requests whose
    event time is at or after it; the spend of its periods before it is ``opening`` (nano-USD
    per minute start, epoch seconds), read from the store when it was created.
    """

    counts_from: AwareDatetime | None = None
    opening: tuple[tuple[int, int], ...] = ()


class FxDay(BaseModel):
    """Daily reference rates of one pair for one year: ``{YYYY-MM-DD: rate}`` (1 base = rate quote)."""

    model_config = _FORBID
    base: str = Field(pattern=r"^[A-Z]{3}$")
    quote: str = Field(pattern=r"^[A-Z]{3}$")
    year: int = Field(ge=1999, le=2999)
    rates: dict[str, str]
    source: str = ""


class RateLimit(BaseModel):
    """A gateway rate limit (``tokenledger.ratelimit``): per minute or day, for the requests its scope matches.

    Scope: tenant plus any of ``api_key``, ``user_id``, ``model``, ``department``, ``project``,
    ``environment``, ``feature``; a value ``*`` is one bucket per distinct value. ``tokens`` is
    input + output (OpenAI's TPM); ``input_tokens`` / ``output_tokens`` are Anthropic's split.
    ``fail_open``: admit while the shared store (Redis) does not answer, instead of refusing.
    """

    model_config = _FORBID
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    tenant: str = Field(pattern=ID_PATTERN)
    scope: dict[str, str] = Field(default_factory=dict)
    per: Literal["minute", "day"] = "minute"
    requests: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    input_tokens: int | None = Field(default=None, gt=0)
    output_tokens: int | None = Field(default=None, gt=0)
    concurrent: int | None = Field(default=None, gt=0)
    fail_open: bool = False

    @field_validator("scope")
    @classmethod
    def _dimensions(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - {"api_key", "user_id", "model", "department", "project", "environment", "feature"}
        if unknown:
            raise ValueError(f"unknown scope dimension(s) {sorted(unknown)}")
        return v

    @model_validator(mode="after")
    def _something(self) -> RateLimit:
        if not any((self.requests, self.tokens, self.input_tokens, self.output_tokens, self.concurrent)):
            raise ValueError("a limit needs requests, tokens, input_tokens, output_tokens or concurrent")
        return self


MODELS: dict[str, type[BaseModel]] = {
    "tenant": Tenant,
    "budget": ControlBudget,
    "key": ApiKey,
    "defaults": Defaults,
    "fx": FxDay,
    "limit": RateLimit,
}


def record_key(kind: str, rid: str) -> str:
    """The topic key of a record."""
    return f"{kind}/{rid}"


def split_key(key: str) -> tuple[str, str]:
    """``(kind, id)`` of a topic key (ValueError for an unknown kind)."""
    kind, sep, rid = key.partition("/")
    if not sep or kind not in MODELS:
        raise ValueError(f"not a control key: {key!r}")
    return kind, rid


def parse(kind: str, doc: Any) -> BaseModel:
    """Validate a record's document (pydantic ValidationError names the field)."""
    return MODELS[kind].model_validate(doc)


def to_doc(record: BaseModel) -> dict[str, Any]:
    """The JSON document of a record (by alias: a budget's levels keep ``break``)."""
    doc: dict[str, Any] = record.model_dump(mode="json", by_alias=True, exclude_defaults=False)
    return doc


def encode(record: BaseModel) -> bytes:
    """Canonical JSON bytes (sorted keys): equal records encode equally."""
    return orjson.dumps(to_doc(record), option=orjson.OPT_SORT_KEYS)


def digest(record: BaseModel) -> str:
    """A short content digest: a definition change is a change of content, not of offset."""
    return hashlib.sha256(encode(record)).hexdigest()[:16]


def now_field(at: datetime) -> str:
    """An instant as the records write it."""
    return at.isoformat()
