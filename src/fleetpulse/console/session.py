"""Console sessions: a signed, expiring cookie instead of the token, and CSRF tokens.

Signing in exchanges an API token for a cookie that holds only the token's public id, an
expiry and a random nonce, signed with HMAC-SHA256 under a key the API process keeps in
memory. The token itself never reaches a URL, a page or the cookie. Every request looks the
token id up again in the governance state, so revoking a principal ends its sessions at once.

A mutating request must carry the CSRF token (a form field or the ``X-CSRF-Token`` header):
an HMAC of the session's nonce, so it is bound to one session and cannot be guessed from the
cookie (which scripts cannot read: HttpOnly, SameSite=Strict).

Pure: no I/O, the clock is a parameter.

Example:
    >>> keys = SessionKeys(b"k" * 32)
    >>> cookie = keys.issue("abc123", now_s=1000, ttl_s=60, nonce="n0")
    >>> keys.verify(cookie, now_s=1030).token_id
    'abc123'
    >>> keys.verify(cookie, now_s=1061) is None
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

COOKIE = "fp_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
DEFAULT_TTL_S = 8 * 3600


@dataclass(frozen=True)
class Session:
    token_id: str
    expires_s: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionKeys:
    """Issues and checks session cookies and their CSRF tokens under one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a session key needs at least 16 bytes")
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> str:
        return hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).hexdigest()

    def issue(self, token_id: str, *, now_s: float, ttl_s: int, nonce: str | None = None) -> str:
        payload = json.dumps(
            {"t": token_id, "e": int(now_s) + ttl_s, "n": nonce or secrets.token_urlsafe(16)},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{self._mac('session', payload)}"

    def verify(self, cookie: str | None, *, now_s: float) -> Session | None:
        """The session in ``cookie``, or None if it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            payload = _unb64(body)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = json.loads(payload)
            s = Session(str(data["t"]), int(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return s if s.expires_s > now_s else None

    def csrf(self, session: Session) -> str:
        return self._mac("csrf", session.nonce.encode())[:32]

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(session))


def same_origin(origin: str | None, host: str | None) -> bool:
    """A browser's ``Origin`` header names this host (or is absent, as from non-browsers).

    >>> same_origin("http://127.0.0.1:8700", "127.0.0.1:8700"), same_origin("https://evil", "a")
    (True, False)
    """
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host


def safe_next(target: str | None, base: str) -> str:
    """Where to go after a form: a path inside the console, never another site.

    >>> safe_next("/ui/agents?x=1", "/ui"), safe_next("//evil.example/ui", "/ui")
    ('/ui/agents?x=1', '/ui/')
    """
    bad = ("//", "\\", "\n", "\r")
    if target and target.startswith(base + "/") and not any(b in target for b in bad):
        return target
    return base + "/"
