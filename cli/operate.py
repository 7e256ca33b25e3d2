"""``stance token | audit | db``: the operator's commands over the catalog itself.

Registered in ``cli/main.py`` (``command(...)(token_create)`` and so on); each imports what it
uses in its body, so building the CLI stays cheap.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.context import embedded_registry, open_registry, settings
from cli.output import JsonOpt, emit, errors, say


def token_create(
    scope: Annotated[str, typer.Option(metavar="SCOPE", help="read, publish or admin")],
    namespace: Annotated[
        list[str] | None,
        typer.Option(metavar="NS", help="Grant only this namespace (repeatable)"),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the token is for")] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(metavar="DAYS", min=1, help="Expire after DAYS days")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token. The secret is printed once; only its hash is stored."""
    from datetime import timedelta

    expires = timedelta(days=expires_in_days) if expires_in_days else None
    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        new = catalog.create_token(
            scope, namespaces=namespace, description=description, expires_in=expires
        )
    emit(
        new,
        as_json=as_json,
        human=lambda: say(
            f"token {new.id} ({scope}); store it now, it is not shown again:\n{new.token}"
        ),
    )


def token_list(as_json: JsonOpt = False) -> None:
    """Tokens with scopes and grants; never their secrets."""
    from cli import report

    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        found = catalog.list_tokens()
    emit(found, as_json=as_json, human=lambda: report.print_tokens(found))


def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Revoke a token at once."""
    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        info = catalog.revoke_token(token_id)
    emit(info, as_json=as_json, human=lambda: say(f"revoked token {info.id}"))


def audit(
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000)] = 50,
    before: Annotated[int | None, typer.Option(metavar="ID", help="Entries older than ID")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. publish, alias.set")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: every write, successful or refused (admin)."""
    from cli import report

    with errors(as_json=as_json), open_registry() as registry:
        entries = registry.audit(limit=limit, before=before, action=action)
    emit(entries, as_json=as_json, human=lambda: report.print_audit(entries))


def db_upgrade(as_json: JsonOpt = False) -> None:
    """Migrate the catalog schema to the newest revision."""
    from registry.catalog.db import current_revision, make_engine, upgrade

    with errors(as_json=as_json):
        engine = make_engine(settings().catalog_url)
        try:
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
        finally:
            engine.dispose()
        result = {"from": before, "to": after, "url": engine.url.render_as_string()}
        emit(
            result,
            as_json=as_json,
            human=lambda: say(f"catalog at revision {after} (was {before or 'empty'})"),
        )
