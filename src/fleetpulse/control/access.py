"""Who may do what: principals' roles, the action matrix, and API tokens.

Roles (public contract):

    engineering   everything
    operations    view; pause and resume agents; force and reset breakers; ack and silence
                  alerts; read the audit log. No configuration changes.
    compliance    read-only: agents, versions, the audit log and analytics
    approver      view agents and approvals; decide approvals
    agent         a service identity: read control, read its own config, request approvals

Tokens look like ``fp_<id>_<secret>``: the id (public) finds the principal, the 256-bit secret
is checked against a salted SHA-256 that is all the governance log stores. A slow KDF would add
nothing for random secrets of this length and would cost every API request milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fleetpulse.contract.errors import AccessDeniedError, AuthenticationError

ROLES = ("engineering", "operations", "compliance", "approver", "agent")

_VIEWERS = frozenset({"engineering", "operations", "compliance", "approver"})
_OPERATORS = frozenset({"engineering", "operations"})
_ENG = frozenset({"engineering"})

# action -> roles allowed. The API and the CLI name every action they perform; a test pins
# the whole matrix.
ACTIONS: dict[str, frozenset[str]] = {
    "whoami": frozenset(ROLES),
    "agents.view": _VIEWERS,
    "agents.config": _VIEWERS | {"agent"},  # an agent: its own only
    "agents.publish": _ENG,
    "agents.activate": _ENG,
    "agents.rollback": _ENG,
    "agents.pause": _OPERATORS,
    "agents.resume": _OPERATORS,
    "breakers.view": _VIEWERS | {"agent"},
    "breakers.change": _OPERATORS,
    "alerts.view": _VIEWERS - {"approver"},
    "alerts.ack": _OPERATORS,
    "alerts.silence": _OPERATORS,
    "approvals.view": _VIEWERS,
    "approvals.request": _ENG | {"agent"},  # an agent: for itself only
    "approvals.decide": _ENG | {"approver"},
    "principals.view": _ENG,
    "principals.change": _ENG,
    "audit.read": _VIEWERS - {"approver"},
}
# actions an agent principal may take only on its own agent id
_OWN_ONLY = frozenset({"agents.config", "approvals.request"})


@dataclass(frozen=True)
class Caller:
    """The principal behind a request: its name, role and, for agents, the agent it is."""

    name: str
    role: str
    agent_id: str = ""

    def can(self, action: str, agent_id: str | None = None) -> bool:
        if self.role not in ACTIONS[action]:
            return False
        if self.role == "agent" and action in _OWN_ONLY:
            return agent_id is not None and agent_id == self.agent_id
        return True

    def require(self, action: str, agent_id: str | None = None) -> None:
        """Raise AccessDeniedError unless this caller may take ``action`` (on ``agent_id``)."""
        if action not in ACTIONS:
            raise KeyError(f"unknown action {action!r}")
        if not self.can(action, agent_id):
            own = " on another agent" if self.role == "agent" and action in _OWN_ONLY else ""
            raise AccessDeniedError(
                self.name,
                self.role,
                action,
                f"{self.name} (role {self.role}) may not {action}{own}",
            )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``token`` is shown once; only ``token_id``, ``salt`` and ``hash`` are kept."""

    token: str
    token_id: str
    salt: str
    hash: str


def issue_token() -> IssuedToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return IssuedToken(
        token=f"fp_{token_id}_{secret}",
        token_id=token_id,
        salt=salt,
        hash=hash_secret(salt, secret),
    )


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """(token_id, secret), or AuthenticationError for anything that is not a fleetpulse token."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "fp" or not parts[1] or not parts[2]:
        raise AuthenticationError("malformed token: expected fp_<id>_<secret>")
    return parts[1], parts[2]


def verify_secret(salt: str, expected_hash: str, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), expected_hash)
