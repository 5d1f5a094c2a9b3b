"""Gateway configuration (YAML): upstream, limits and the API keys with their attribution."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenledger.control.records import check_grant

DEFAULT_GATEWAY_CONFIG = Path(__file__).resolve().parents[2] / "tokenledger" / "data" / "gateway.yaml"
_FORBID = ConfigDict(extra="forbid", frozen=True)

# Model name prefix -> provider (prices are looked up by provider and model).
PROVIDER_PREFIXES = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("deepseek", "deepseek"),
    ("qwen", "dashscope"),
    ("gemini", "google"),
)


def provider_for(model: str) -> str:
    """The provider a model name belongs to (``openai`` when unknown: an OpenAI-compatible upstream)."""
    for prefix, provider in PROVIDER_PREFIXES:
        if model.startswith(prefix):
            return provider
    return "openai"


class GatewayKey(BaseModel):
    """One API key, the attribution of every call made with it, and what its holder may claim.

    ``features``: the features a call may claim (``X-Tokenledger-Feature``; ``default`` always);
    ``exempt_features``: those of them that skip budgets whitelisting the feature (no key skips a
    budget unless granted here); ``user_from``: where a call's end user comes from: ``key``
    (``user``, fixed), ``header`` (``user_header``, set by an authenticating proxy in front) or
    ``body`` (the request's ``user``: the key's holder chooses it, so per-user budgets and limits
    bind only honest callers). A claim outside the grant is refused with 403.
    """

    model_config = _FORBID
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str
    department: str = ""
    project: str = ""
    environment: str = ""
    features: tuple[str, ...] = ()
    exempt_features: tuple[str, ...] = ()
    user_from: Literal["key", "header", "body"] = "key"
    user: str = ""
    user_header: str = "X-Tokenledger-User"

    @model_validator(mode="after")
    def _exempt_are_claimable(self) -> GatewayKey:
        check_grant(self.features, self.exempt_features)  # the rule of a live gateway key too
        return self


class GatewayConfig(BaseModel):
    """The gateway's YAML file."""

    model_config = _FORBID
    upstream: str = "http://127.0.0.1:8090"
    upstream_api_key_env: str = "TOKENLEDGER_UPSTREAM_API_KEY"
    source: str = "//gateway/reference"
    default_max_tokens: int = Field(default=4096, gt=0)
    # Output tokens reserved against rate limits when a request sets no max_tokens (corrected at completion).
    default_output_estimate: int = Field(default=1024, gt=0)
    stale_after_s: float = Field(default=10.0, gt=0)
    hold_s: float = Field(default=1.0, ge=0)
    headroom_share: Decimal = Field(default=Decimal(1), gt=0, le=1)
    keys: tuple[GatewayKey, ...] = ()

    @classmethod
    def load(cls, path: Path = DEFAULT_GATEWAY_CONFIG) -> GatewayConfig:
        """Read and validate."""
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def key_for(self, token: str) -> GatewayKey | None:
        """The key a bearer token belongs to (compared by sha256, never stored in clear)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        return next((k for k in self.keys if k.key_sha256 == digest), None)
