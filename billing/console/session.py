"""Console sessions: a billing token signs a browser in to its tenant.

The cookie holds a random session id only (HttpOnly, SameSite=Strict, Secure over HTTPS);
the server maps it to the tenant and to the sha256 of the token it was opened with. Every
request checks that token against the live control plane, so revoking the token ends its
sessions at once. Sessions live in this process (signing in again after a restart) and
expire after ``TTL_S``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from tokenledger.control.state import ControlState

COOKIE = "tl_session"
TTL_S = 12 * 3600


def billing_tenant(control: ControlState, token: str) -> tuple[str, str] | None:
    """``(tenant, sha256)`` of a live billing token (the API's bearer and the console's sign-in), else None."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    key = control.key_for(digest, "billing")
    return None if key is None else (key.tenant, digest)


@dataclass(frozen=True)
class Session:
    """A signed-in browser."""

    tenant: str
    token_sha256: str
    expires: float


class Sessions:
    """Session ids to tenants (``clock`` is monotonic seconds, injectable for tests)."""

    def __init__(self, control: ControlState, clock: object = time.monotonic) -> None:
        self.control = control
        self._clock = clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def tenant_of_token(self, token: str) -> tuple[str, str] | None:
        """``(tenant, sha256)`` of a live billing token, else None."""
        return billing_tenant(self.control, token)

    def open(self, token: str) -> tuple[str, str] | None:
        """Sign in: ``(session id, tenant)``, or None for an unknown token."""
        found = self.tenant_of_token(token)
        if found is None:
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = self._now()
            for k in [k for k, s in self._by_id.items() if s.expires <= now]:  # forget expired ones
                del self._by_id[k]
            self._by_id[sid] = Session(found[0], found[1], now + TTL_S)
        return sid, found[0]

    def tenant(self, sid: str | None) -> str | None:
        """The tenant of a live session whose token is still valid."""
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
        if s is None or s.expires <= self._now():
            return None
        key = self.control.key_for(s.token_sha256, "billing")
        if key is None or key.tenant != s.tenant:  # revoked since: the session ends with it
            self.close(sid)
            return None
        return s.tenant

    def close(self, sid: str | None) -> None:
        """Sign out."""
        if sid:
            with self._lock:
                self._by_id.pop(sid, None)
