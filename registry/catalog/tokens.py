"""Bearer tokens: creation, verification, revocation (service functions: flush, never commit).

A token reads ``stance_<id>_<secret>``: the prefix lets secret scanners find leaked ones, the
id finds the row without a scan, and the 256-bit secret is checked in constant time against a
salted SHA-256. A slow password hash (bcrypt, argon2) buys nothing for random 256-bit secrets,
which cannot be guessed, and would cost milliseconds on every request; the salt keeps equal
secrets from sharing a hash and needs no server-wide key to distribute between processes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.access import Caller, Scope
from registry.catalog.audit import record
from registry.catalog.models import Token, utcnow
from registry.errors import InvalidSpec, NotFound, Unauthorized
from registry.spec import validate_name

PREFIX = "stance_"
_SHAPE = re.compile(r"stance_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# last_used_at is written at most this often per token, so reads stay cheap.
TOUCH_EVERY = timedelta(minutes=1)


class TokenInfo(BaseModel):
    id: str
    scope: str
    namespaces: list[str]
    description: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(BaseModel):
    id: str
    token: str


def _hash(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def create_token(
    session: Session,
    *,
    scope: str,
    namespaces: list[str] | None = None,
    description: str | None = None,
    expires_in: timedelta | None = None,
    actor: str,
) -> NewToken:
    """Mint a token; the secret is returned once and only its salted hash is stored."""
    try:
        parsed = Scope(scope)
    except ValueError:
        raise InvalidSpec(f"invalid scope {scope!r}: use read, publish or admin") from None
    grants = sorted({validate_name(ns, what="namespace") for ns in namespaces or []})
    token_id = secrets.token_hex(8)
    secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    expires = utcnow() + expires_in if expires_in else None
    session.add(
        Token(
            id=token_id,
            salt=salt,
            hash=_hash(salt, secret),
            scope=parsed.value,
            namespaces=grants,
            description=description,
            created_by=actor,
            expires_at=expires,
        )
    )
    record(
        session,
        actor=actor,
        action="token.create",
        target=token_id,
        scope=parsed.value,
        namespaces=grants,
    )
    session.flush()
    return NewToken(id=token_id, token=secret)


def list_tokens(session: Session) -> list[TokenInfo]:
    rows = session.scalars(select(Token).order_by(Token.created_at, Token.id)).all()
    return [TokenInfo.model_validate(row, from_attributes=True) for row in rows]


def revoke_token(session: Session, token_id: str, *, actor: str) -> TokenInfo:
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"no token {token_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(session, actor=actor, action="token.revoke", target=token_id)
        session.flush()
    return TokenInfo.model_validate(row, from_attributes=True)


def verify(session: Session, presented: str) -> tuple[Caller, bool]:
    """The caller a presented token stands for, and whether its last-used time is stale.

    Raises Unauthorized for anything but a live token. Reads only: see ``touch``.
    """
    match = _SHAPE.fullmatch(presented)
    row = session.get(Token, match.group(1)) if match else None
    # Hash even when the id is unknown, so timing does not reveal which ids exist.
    salt = row.salt if row is not None else "00" * 16
    valid = hmac.compare_digest(_hash(salt, presented), row.hash if row is not None else "")
    if row is None or not valid:
        raise Unauthorized("unknown token")
    now = utcnow()
    if row.revoked_at is not None:
        raise Unauthorized(f"token {row.id} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"token {row.id} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC")
    stale = row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY
    return Caller(f"token:{row.id}", Scope(row.scope), frozenset(row.namespaces)), stale


def touch(session: Session, token_id: str) -> None:
    """Record that a token was used (at most once a minute, so reads stay read-only)."""
    row = session.get(Token, token_id)
    if row is not None:
        row.last_used_at = utcnow()
        session.flush()
