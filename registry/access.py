"""Who is asking, and what they may do: scopes (read < publish < admin) and namespace grants."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from registry.errors import Forbidden, Unauthorized


class Scope(StrEnum):
    READ = "read"
    PUBLISH = "publish"
    ADMIN = "admin"

    @property
    def level(self) -> int:
        return list(Scope).index(self)


@dataclass(frozen=True)
class Caller:
    """Who is asking: a token's scope and namespace grants, or anonymous."""

    actor: str
    scope: Scope | None
    namespaces: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN

    def authorize(self, needed: Scope, namespace: str | None = None) -> None:
        """Raise Unauthorized without a token, Forbidden without the scope or the namespace."""
        if self.scope is None:
            raise Unauthorized(f"{needed.value} access needs a token (Authorization: Bearer ...)")
        if self.scope.level < needed.level:
            raise Forbidden(f"token scope {self.scope.value!r} does not allow {needed.value}")
        if namespace is not None and self.namespaces and namespace not in self.namespaces:
            raise Forbidden(f"token has no grant for namespace {namespace!r}")


def operator(actor: str) -> Caller:
    """Whoever holds the catalog itself (the local CLI): admin everywhere."""
    return Caller(actor, Scope.ADMIN)
