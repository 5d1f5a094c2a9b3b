"""Filing budgets by one value of their scope, so a request finds its budgets without a scan. Pure.

A budget's anchor is the first dimension of its scope in :data:`~tokenledger.budgets.SCOPE_DIMENSIONS`
order with its value (``None``: a tenant-wide budget). A request probes its tenant's budgets
under ``None`` and under each of its ~8 ``(dimension, value)`` pairs, then checks the few
candidates' whole scopes: the work does not grow with the number of budgets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from tokenledger.budgets import SCOPE_DIMENSIONS

Anchor = tuple[str, str] | None
_LABEL = {"user_id": "user"}  # scope dimension -> request label


def anchor_of(scope: Mapping[str, str]) -> Anchor:
    """Where a budget with this scope is filed."""
    for dim in SCOPE_DIMENSIONS:
        if dim in scope:
            return dim, scope[dim]
    return None


def probes(labels: Mapping[str, str], model: str) -> Iterator[tuple[str, str]]:
    """The anchors a request with these labels and model can match."""
    for dim in SCOPE_DIMENSIONS:
        yield dim, model if dim == "model" else labels.get(_LABEL.get(dim, dim), "")
