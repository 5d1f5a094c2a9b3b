"""Budget definitions (YAML), shared by the stream jobs (enforcement) and billing (forecasts)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from tokenledger.errors import load_yaml_model
from tokenledger.money import units_to_nanos
from tokenledger.pricing.overrides import _no_float

DEFAULT_BUDGETS = Path(__file__).resolve().parent / "data" / "control.yaml"  # its budgets and default timezone
SCOPE_DIMENSIONS = ("department", "project", "user_id", "model", "feature", "api_key", "environment")
_FORBID = ConfigDict(extra="forbid", frozen=True)
Usd = Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, allow_inf_nan=False)]
Ratio = Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, le=10, allow_inf_nan=False)]


class Levels(BaseModel):
    """Shares of the limit at which a budget warns, throttles and breaks."""

    model_config = _FORBID
    warn: Ratio = Decimal("0.5")
    throttle: Ratio = Decimal("0.8")
    break_: Ratio = Field(default=Decimal("1.0"), alias="break")

    @model_validator(mode="after")
    def _ordered(self) -> Levels:
        if not self.warn < self.throttle <= self.break_:
            raise ValueError("levels must satisfy warn < throttle <= break")
        return self


class Budget(BaseModel):
    """One budget: a scope (tenant plus any combination of dimensions), a period and a limit."""

    model_config = _FORBID
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    tenant: str
    scope: dict[str, str] = Field(default_factory=dict)
    period: Literal["day", "month", "rolling_1h", "rolling_24h"] = "month"
    limit_usd: Usd
    levels: Levels = Field(default_factory=Levels)
    whitelist_features: tuple[str, ...] = ()
    downgrade_model: str | None = None
    max_tokens_per_request: int | None = Field(default=None, gt=0)
    fail_open: bool = False
    # Publish the breaker again whenever spend moved this share of the limit since the last
    # publish, so gateways see a fresh remaining amount, not only state changes.
    publish_step: Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, le=1)] = Decimal("0.01")

    @field_validator("scope")
    @classmethod
    def _known_dimensions(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(SCOPE_DIMENSIONS)
        if unknown:
            raise ValueError(f"unknown scope dimension(s) {sorted(unknown)}; use {SCOPE_DIMENSIONS}")
        return v

    @property
    def limit_nanos(self) -> int:
        """The limit in nano-USD."""
        found = _LIMITS.get(self.limit_usd)
        if found is None:  # read once per budget and request on the hot path
            found = _LIMITS[self.limit_usd] = units_to_nanos(self.limit_usd)
        return found


_LIMITS: dict[Decimal, int] = {}


class BudgetFile(BaseModel):
    """The budgets YAML: calendar periods are in ``timezone``."""

    model_config = _FORBID
    timezone: str = "UTC"
    budgets: tuple[Budget, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:  # KeyError subclass: pydantic would not report it
            raise ValueError(f"unknown timezone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> BudgetFile:
        ids = [b.id for b in self.budgets]
        if len(ids) != len(set(ids)):
            raise ValueError("budget ids must be unique")
        return self

    @property
    def tz(self) -> ZoneInfo:
        """Timezone of calendar periods."""
        return ZoneInfo(self.timezone)

    @classmethod
    def load(cls, path: Path = DEFAULT_BUDGETS) -> BudgetFile:
        """Read and validate a budgets file, or a control file's budgets (its default timezone with them).

        Raises:
            ConfigError: The file is missing, not YAML, or not a valid budget file (first problem named).
        """
        from tokenledger.control.files import ControlFile  # noqa: PLC0415 - the control file builds on budgets

        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            doc = None  # load_yaml_model names the problem
        if isinstance(doc, dict) and set(doc) <= {"timezone", "budgets"}:
            return load_yaml_model(cls, path)
        control = ControlFile.load(path)
        zone = control.defaults.timezone if control.defaults else (control.timezone or "UTC")
        return cls(timezone=zone, budgets=control.budgets)
