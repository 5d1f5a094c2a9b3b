"""Request identity: what is billed once, scoped by tenant and encoded unambiguously.

A request is billed once per ``(tenant, source, request_id)``. Two tenants may use the same
source and request id (a guessable ``//svc/chat`` / ``req-1``): each is billed once, in its own
bill. The identity string joins the three with U+001F (ASCII unit separator), a character
the v1 schema refuses in every one of them (sources and request ids are printable ASCII without
spaces, label values exclude control characters), so the encoding is injective.

Placement is a separate question: the Kafka key of a raw event stays ``source|request_id``
(what every producer since the first release sends). Placement needs no injectivity, only
determinism: the pricing stage recomputes the home partition from the event itself and forwards
an event that arrived elsewhere (see ``stream_jobs/pricing_agent.py``), so a client's own
partitioner cannot split a request's copies over two partitions.

Identities recorded before tenant scoping (``source|request_id``, no separator) are still
honoured for the dedup horizon: an upgraded worker restoring an old changelog finds them.
"""

from __future__ import annotations

from typing import Protocol

SEP = "\x1f"


class _Labels(Protocol):
    @property
    def tenant(self) -> str: ...


class _Data(Protocol):
    @property
    def request_id(self) -> str: ...

    @property
    def labels(self) -> _Labels: ...


class _Event(Protocol):
    @property
    def source(self) -> str: ...

    @property
    def data(self) -> _Data: ...


def request_identity(ev: _Event) -> str:
    """``tenant SEP source SEP request_id``: billed once, in every pricing path."""
    return f"{ev.data.labels.tenant}{SEP}{ev.source}{SEP}{ev.data.request_id}"


def identity_of(tenant: str, source: str, request_id: str) -> str:
    """The identity of a request from its parts.

    Raises:
        ValueError: A part holds the separator (the schema refuses such events).
    """
    if SEP in tenant or SEP in source or SEP in request_id:
        raise ValueError("identity parts must not contain U+001F")
    return f"{tenant}{SEP}{source}{SEP}{request_id}"


def split_identity(identity: str) -> tuple[str, str, str]:
    """``(tenant, source, request_id)`` of an identity (the inverse of :func:`identity_of`).

    Raises:
        ValueError: A legacy identity (no tenant).
    """
    parts = identity.split(SEP)
    if len(parts) != 3:
        raise ValueError(f"not a tenant-scoped identity: {identity!r}")
    return parts[0], parts[1], parts[2]


def legacy_identity(ev: _Event) -> str:
    """The identity releases before tenant scoping recorded (``source|request_id``)."""
    return f"{ev.source}|{ev.data.request_id}"


def is_legacy(identity: str) -> bool:
    """Whether a recorded identity predates tenant scoping."""
    return SEP not in identity


def placement_key(ev: _Event) -> bytes:
    """The Kafka key of a raw event: its partition (murmur2 of this) is where its request is de-duplicated."""
    return f"{ev.source}|{ev.data.request_id}".encode()
