"""Billing configuration (YAML, validated)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenledger.errors import load_yaml_model

DEFAULT_BILLING_CONFIG = Path(__file__).resolve().parents[1] / "tokenledger" / "data" / "billing.yaml"
_FORBID = ConfigDict(extra="forbid", frozen=True)


class CacheAdvice(BaseModel):
    """When a low cache-hit ratio is worth a suggestion."""

    model_config = _FORBID
    min_avg_input_tokens: int = 1024
    low_ratio: Decimal = Decimal("0.20")
    target_ratio: Decimal = Decimal("0.50")


class AdviceConfig(BaseModel):
    """Optimisation advice thresholds."""

    model_config = _FORBID
    short_output_tokens: int = 200
    min_requests: int = 20
    cache: CacheAdvice = Field(default_factory=CacheAdvice)
    offline_features: tuple[str, ...] = ()
    cheaper_model: dict[str, str] = Field(default_factory=dict)

    def cheaper_for(self, model: str) -> tuple[str, str] | None:
        """``(provider, model)`` suggested instead of ``model`` (longest matching prefix)."""
        best = max((p for p in self.cheaper_model if model.startswith(p)), key=len, default=None)
        if best is None:
            return None
        provider, _, target = self.cheaper_model[best].partition("/")
        return provider, target


class Access(BaseModel):
    """One bearer token (sha256 digest) bound to one tenant."""

    model_config = _FORBID
    tenant: str
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Admin(BaseModel):
    """One admin token (sha256 digest) of the control plane's admin API; ``name`` is the audit's actor."""

    model_config = _FORBID
    name: str = Field(min_length=1, max_length=100)
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BillingConfig(BaseModel):
    """The billing YAML.

    ``timezone`` and ``currency`` are the defaults of tenants the control plane has no record
    of; ``access`` is read only by a server without a control plane (billing tokens are
    control-plane keys).
    """

    model_config = _FORBID
    timezone: str = "UTC"
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    advice: AdviceConfig = Field(default_factory=AdviceConfig)
    access: tuple[Access, ...] = ()
    admins: tuple[Admin, ...] = ()

    def admin_digests(self, env_digest: str | None = None) -> dict[str, str]:
        """sha256 -> name of every admin token (``TOKENLEDGER_ADMIN_TOKEN_SHA256`` adds one named ``env``)."""
        found = {a.token_sha256: a.name for a in self.admins}
        if env_digest:
            found[env_digest.strip().lower()] = "env"
        return found

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:  # KeyError subclass: pydantic would not report it
            raise ValueError(f"unknown timezone {v!r}") from exc
        return v

    @property
    def tz(self) -> ZoneInfo:
        """The billing timezone."""
        return ZoneInfo(self.timezone)

    @classmethod
    def load(cls, path: Path = DEFAULT_BILLING_CONFIG) -> BillingConfig:
        """Read and validate a YAML file (:class:`~tokenledger.errors.ConfigError` naming the first problem)."""
        return load_yaml_model(cls, path)
