"""YAML import/export of the control plane (``python -m billing control apply|export``). Pure.

A control file lists tenants, budgets and keys (by digest, never a secret); a team keeps it in
git. ``apply`` computes the changes that make the control state hold what the file says
(upserts; with ``prune``, also deletes of records of the same kinds the file does not list), so
applying the same file twice changes nothing the second time. The older budgets file (top-level
``timezone`` plus ``budgets``) is read as a control file whose ``timezone`` is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenledger.control.records import ApiKey, ControlBudget, Defaults, RateLimit, Tenant, to_doc
from tokenledger.control.state import ControlState
from tokenledger.errors import load_yaml_model

DEFAULT_CONTROL = Path(__file__).resolve().parents[1] / "data" / "control.yaml"
Record = tuple[str, str, BaseModel | None]  # (kind, id, record; None deletes)


class ControlFile(BaseModel):
    """The control YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults: Defaults | None = None
    timezone: str | None = None  # the budgets file's form of ``defaults.timezone``
    tenants: tuple[Tenant, ...] = ()
    budgets: tuple[ControlBudget, ...] = ()
    keys: tuple[ApiKey, ...] = Field(default=())
    limits: tuple[RateLimit, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> ControlFile:
        for kind, ids in (
            ("tenants", [t.id for t in self.tenants]),
            ("budgets", [b.id for b in self.budgets]),
            ("keys", [k.id for k in self.keys]),
            ("limits", [x.id for x in self.limits]),
        ):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"{kind}: duplicate id(s) {dup}")
        if self.timezone is not None:
            Defaults(timezone=self.timezone)  # validates the zone
        return self

    def records(self) -> list[Record]:
        """Every record the file defines."""
        out: list[Record] = []
        defaults = self.defaults
        if defaults is None and self.timezone is not None:
            defaults = Defaults(timezone=self.timezone)
        if defaults is not None:
            out.append(("defaults", "all", defaults))
        out += [("tenant", t.id, t) for t in self.tenants]
        out += [("budget", b.id, b) for b in self.budgets]
        out += [("key", k.id, k) for k in self.keys]
        out += [("limit", x.id, x) for x in self.limits]
        return out

    @classmethod
    def load(cls, path: Path) -> ControlFile:
        """Read and validate (ConfigError naming the file and the first problem)."""
        return load_yaml_model(cls, path)


def current(state: ControlState, kind: str, rid: str) -> BaseModel | None:
    """The state's record of ``kind``/``rid``."""
    if kind == "defaults":
        return state.defaults
    found: BaseModel | None = state.table(kind).get(rid)
    return found


def plan(state: ControlState, wanted: list[Record], *, prune: bool = False) -> list[Record]:
    """The writes that make ``state`` hold ``wanted`` (nothing for records already equal)."""
    wanted = [(k, i, _keep_opening(current(state, k, i), r)) for k, i, r in wanted]
    out: list[Record] = [(k, i, r) for k, i, r in wanted if current(state, k, i) != r]
    if prune:
        listed = {(k, i) for k, i, _ in wanted}
        kinds = {k for k, _, _ in wanted} | {"tenant", "budget", "key", "limit"}
        tables = (("tenant", state.tenants), ("budget", state.budgets), ("key", state.keys), ("limit", state.limits))
        for kind, table in tables:
            if kind in kinds:
                out += [(kind, rid, None) for rid in sorted(table) if (kind, rid) not in listed]
    return out


def _keep_opening(before: BaseModel | None, record: BaseModel | None) -> BaseModel | None:
    """A file's budget without ``counts_from`` keeps the one the control plane gave it (export drops it)."""
    if isinstance(record, ControlBudget) and isinstance(before, ControlBudget) and record.counts_from is None:
        return record.model_copy(update={"counts_from": before.counts_from, "opening": before.opening})
    return record


def describe(state: ControlState, changes: list[Record]) -> list[str]:
    """One line per change, as a diff: ``+`` create, ``~`` update (fields that differ), ``-`` delete."""
    lines = []
    for kind, rid, record in changes:
        before = current(state, kind, rid)
        if record is None:
            lines.append(f"- {kind} {rid}")
        elif before is None or (kind == "defaults" and before == Defaults() and rid == "all" and record != before):
            lines.append(f"+ {kind} {rid}")
        else:
            a, b = to_doc(before), to_doc(record)
            fields = ", ".join(
                f"{f}: {a.get(f)!r} -> {b.get(f)!r}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)
            )
            lines.append(f"~ {kind} {rid}: {fields}")
    return lines


def export(state: ControlState) -> str:
    """The state as a control file (keys by digest; budgets without their opening spend)."""
    doc: dict[str, Any] = {
        "defaults": to_doc(state.defaults),
        "tenants": [to_doc(t) for _, t in sorted(state.tenants.items())],
        "budgets": [_budget_doc(b) for _, b in sorted(state.budgets.items())],
        "keys": [to_doc(k) for _, k in sorted(state.keys.items())],
        "limits": [to_doc(x) for _, x in sorted(state.limits.items())],
    }
    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _budget_doc(budget: ControlBudget) -> dict[str, Any]:
    doc = to_doc(budget)
    doc.pop("opening", None)
    if doc.get("counts_from") is None:
        doc.pop("counts_from", None)
    return doc
