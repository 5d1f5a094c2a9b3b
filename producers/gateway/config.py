"""Gateway configuration (YAML): upstream, limits and the API keys with their attribution."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

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
    """One API key and the attribution of every call made with it."""

    model_config = _FORBID
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str
    department: str = ""
    project: str = ""
    environment: str = ""


class GatewayConfig(BaseModel):
    """The gateway's YAML file."""

    model_config = _FORBID
    upstream: str = "http://127.0.0.1:8090"
    upstream_api_key_env: str = "TOKENLEDGER_UPSTREAM_API_KEY"
    source: str = "//gateway/reference"
    default_max_tokens: int = Field(default=4096, gt=0)
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
