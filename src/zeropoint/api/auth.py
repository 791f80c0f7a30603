"""Bearer-token auth and roles for the HTTP API.

Roles are ordered viewer < submitter < approver < admin: each may do what the ones below it may. Tokens are
made with `zpctl token create`; the store keeps only a salted SHA-256 of each secret.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..orchestrator.store import ROLES, SqliteStore

RANK = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    actor: str      # what the audit log records: "token:<name>#<id>"
    role: str
    token_id: str

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def resolve(store: SqliteStore, header: str | None) -> Principal | None:
    secret = bearer(header)
    tok = store.authenticate(secret) if secret else None
    if tok is None:
        return None
    return Principal(actor=f"token:{tok.name}#{tok.id}", role=tok.role, token_id=tok.id)
