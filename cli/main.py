"""``stance``: publish, find, pin and pull LoRA adapters (see ``stance --help``)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli import pinning, report
from cli.context import embedded_registry, open_registry, overrides, settings
from cli.gc import gc
from cli.output import emit, errors, stdout, warn
from registry.catalog.db import current_revision, make_engine, open_catalog, upgrade
from registry.lora.inspection import inspect_dir
from registry.schemas import SearchQuery

app = typer.Typer(
    help="Registry for LoRA adapters: publish, discover, pin and pull exact versions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Catalog schema.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens (needs the catalog itself: the operator's path).", no_args_is_help=True
)
alias_app = typer.Typer(
    help="Mutable, audited pointers such as prod or staging.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(alias_app, name="alias")
app.add_typer(token_app, name="token")
app.command()(gc)
for command in (pinning.lock, pinning.sync, pinning.verify, pinning.export):
    app.command()(command)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document.")]
SpecArg = Annotated[str, typer.Argument(help="[namespace/]name[@version|range|alias|digest]")]
RefArg = Annotated[str, typer.Argument(help="[namespace/]name")]


@app.callback()
def main(
    home: Annotated[Path | None, typer.Option(help="Registry home [env: STANCE_HOME]")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Catalog URL [env: STANCE_DATABASE_URL]")
    ] = None,
    store: Annotated[str | None, typer.Option(help="Blob store URL [env: STANCE_STORE]")] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry server URL [env: STANCE_REGISTRY]")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token for the server [env: STANCE_TOKEN]")
    ] = None,
) -> None:
    """Options given here override the STANCE_* environment."""
    overrides.clear()
    for key, value in {
        "home": home,
        "database_url": database_url,
        "store": store,
        "registry": registry,
        "token": token,
    }.items():
        if value is not None:
            overrides[key] = str(value)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve the HTTP API (/v1, /docs, /metrics) and the discovery pages.

    The server keeps no state of its own: several processes over one PostgreSQL catalog and
    one store act as one registry.
    """
    import uvicorn

    current = settings()
    with errors(as_json=False):
        open_catalog(current.catalog_url).close()  # migrated once, before workers start
    for key, value in overrides.items():  # workers build their settings from the environment
        os.environ[f"STANCE_{key.upper()}"] = value
    os.environ.pop("STANCE_REGISTRY", None)  # a server serves its own catalog
    config = uvicorn.Config(
        "registry.api:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
    if workers == 1:
        uvicorn.Server(config).run()
        return
    # uvicorn binds a multi-worker listener with proto 0, so asyncio never sets TCP_NODELAY on
    # its connections and each keep-alive response waits ~40 ms for a delayed ACK
    # (Kludex/uvicorn#3149). Bind it ourselves as a TCP socket, then let uvicorn supervise.
    from uvicorn.supervisors import Multiprocess

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.set_inheritable(True)
    Multiprocess(config, sockets=[listener]).run()


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Migrate the catalog schema to the newest revision."""
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
            human=lambda: stdout.print(f"catalog at revision {after} (was {before or 'empty'})"),
        )


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder (save_pretrained output)")],
    target: Annotated[str, typer.Argument(help="[namespace/]name@version, e.g. curious@1.0.0")],
    alias: Annotated[str | None, typer.Option(help="Also point this alias at the version")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate an adapter folder and publish it as an immutable version."""
    with errors(as_json=as_json), open_registry() as registry:
        result = registry.publish(folder, target, alias=alias)
    for message in result.warnings:
        warn(message)
    verb = "published" if result.created else "already published (identical content)"
    emit(
        result.model_dump(include={"namespace", "name", "version", "digest"}),
        as_json=as_json,
        human=lambda: stdout.print(
            f"{verb} {result.namespace}/{result.name}@{result.version} {result.digest}"
            + (f" (alias {alias})" if alias else "")
        ),
    )


@app.command("inspect")
def inspect_cmd(
    folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder")],
    as_json: JsonOpt = False,
) -> None:
    """Validate an adapter folder and report its metadata and fingerprint; publishes nothing."""
    with errors(as_json=as_json):
        inspection = inspect_dir(folder, max_weights_bytes=settings().max_weights_bytes)
    for message in inspection.warnings:
        warn(message)
    info = inspection.info.model_dump(mode="json")
    emit(info, as_json=as_json, human=lambda: report.print_info(info, title=str(folder)))


@app.command()
def show(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Metadata and fingerprint of a published version."""
    with errors(as_json=as_json), open_registry() as registry:
        detail = registry.show(spec)
    if detail.yanked:
        warn(f"{detail.namespace}/{detail.name}@{detail.version} is yanked: {detail.yanked_reason}")
    data = {**detail.info, **detail.model_dump(mode="json", exclude={"info"})}
    emit(data, as_json=as_json, human=lambda: report.print_version(detail))


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="Text in the adapter name")] = None,
    base_model: Annotated[str | None, typer.Option(help="Exact base model id")] = None,
    target: Annotated[str | None, typer.Option(help="A targeted module, e.g. q_proj")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank r")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only this namespace")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find adapters by name and by what their versions target."""
    with errors(as_json=as_json), open_registry() as registry:
        filters = SearchQuery(
            text=text,
            base_model=base_model,
            target=target,
            rank=rank,
            namespace=namespace,
            limit=limit,
            cursor=cursor,
        )
        page = registry.search(filters)
    emit(page, as_json=as_json, human=lambda: report.print_search(page))


@app.command()
def versions(ref: RefArg, as_json: JsonOpt = False) -> None:
    """Every version of an adapter, newest first, with yanks and aliases."""
    with errors(as_json=as_json), open_registry() as registry:
        detail = registry.adapter(ref)
    emit(detail, as_json=as_json, human=lambda: report.print_versions(detail))


@app.command()
def resolve(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """The exact version and digest a spec selects (for pinning)."""
    with errors(as_json=as_json), open_registry() as registry:
        found = registry.resolve(spec)
    if found.yanked:
        warn(f"{found.spec} is yanked: {found.yanked_reason or 'no reason given'}")
    emit(
        found.model_dump(include={"namespace", "name", "version", "digest", "yanked"}),
        as_json=as_json,
        human=lambda: stdout.print(f"{found.spec} {found.digest}"),
    )


@app.command()
def pull(
    spec: SpecArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder [./NAME]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a version's files, each verified against its digest."""
    with errors(as_json=as_json), open_registry() as registry:
        found = registry.resolve(spec)
        if found.yanked:
            warn(f"{found.spec} is yanked: {found.yanked_reason or 'no reason given'}")
        folder = registry.fetch(found.spec, output or Path.cwd() / found.name)
    result = {
        **found.model_dump(include={"namespace", "name", "version", "digest"}),
        "path": str(folder),
        "files": [f.path for f in found.files],
    }
    emit(result, as_json=as_json, human=lambda: stdout.print(f"pulled {found.spec} into {folder}"))


@alias_app.command("set")
def alias_set(
    ref: RefArg,
    alias: str,
    version: str,
    protect: Annotated[
        bool | None,
        typer.Option("--protect/--unprotect", help="Only admins may move a protected alias"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS of an adapter at an exact VERSION."""
    with errors(as_json=as_json), open_registry() as registry:
        target = registry.set_alias(ref, alias, version, protect=protect)
    emit(
        {**target.model_dump(), "alias": alias},
        as_json=as_json,
        human=lambda: stdout.print(f"{target.spec} is now {alias}"),
    )


@alias_app.command("rm")
def alias_rm(ref: RefArg, alias: str, as_json: JsonOpt = False) -> None:
    """Remove an alias (its history stays)."""
    with errors(as_json=as_json), open_registry() as registry:
        registry.remove_alias(ref, alias)
    emit({"removed": alias}, as_json=as_json, human=lambda: stdout.print(f"removed alias {alias}"))


@alias_app.command("list")
def alias_list(ref: RefArg, as_json: JsonOpt = False) -> None:
    """The aliases of an adapter."""
    with errors(as_json=as_json), open_registry() as registry:
        detail = registry.adapter(ref)

    def human() -> None:
        table = Table("alias", "version", "updated by", "updated at")
        for a in detail.aliases:
            table.add_row(a.name, a.version, a.updated_by, f"{a.updated_at:%Y-%m-%d %H:%M}")
        stdout.print(table)

    emit(detail.aliases, as_json=as_json, human=human)


@alias_app.command("history")
def alias_history(ref: RefArg, as_json: JsonOpt = False) -> None:
    """Who moved which alias from what to what, and when (newest first)."""
    with errors(as_json=as_json), open_registry() as registry:
        moves = registry.alias_history(ref)
    emit(moves, as_json=as_json, human=lambda: report.print_alias_history(moves))


@app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    before: Annotated[int | None, typer.Option(help="Entries older than this id")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. publish, alias.set")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: every write, successful or refused (admin)."""
    with errors(as_json=as_json), open_registry() as registry:
        entries = registry.audit(limit=limit, before=before, action=action)
    emit(entries, as_json=as_json, human=lambda: report.print_audit(entries))


@app.command()
def yank(
    spec: Annotated[str, typer.Argument(help="[namespace/]name@version")],
    reason: Annotated[str | None, typer.Option(help="Shown to everyone who resolves it")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hide a version from ranges and latest; exact pins still resolve (with a warning)."""
    with errors(as_json=as_json), open_registry() as registry:
        ref = registry.yank(spec, reason=reason)
    emit(ref, as_json=as_json, human=lambda: stdout.print(f"yanked {ref.spec}"))


@app.command()
def unyank(
    spec: Annotated[str, typer.Argument(help="[namespace/]name@version")],
    as_json: JsonOpt = False,
) -> None:
    """Undo a yank."""
    with errors(as_json=as_json), open_registry() as registry:
        ref = registry.unyank(spec)
    emit(ref, as_json=as_json, human=lambda: stdout.print(f"unyanked {ref.spec}"))


@app.command()
def diff(
    x: Annotated[str, typer.Argument(help="A published spec, or an adapter folder")],
    y: Annotated[str, typer.Argument(help="A published spec, or an adapter folder")],
    as_json: JsonOpt = False,
) -> None:
    """Exact cosine similarity of two adapters' updates, module by module (an existing folder
    wins over a spec of the same name)."""
    with errors(as_json=as_json), open_registry() as registry:
        result = registry.diff(x, y)
    for message in result.warnings:
        warn(message)
    emit(result, as_json=as_json, human=lambda: report.print_diff(result))


@app.command()
def similar(
    spec: SpecArg,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Published adapters on the same base model whose updates point the same way."""
    with errors(as_json=as_json), open_registry() as registry:
        found = registry.similar(spec, limit=limit)
    emit(found, as_json=as_json, human=lambda: report.print_similar(found))


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help="read, publish or admin")],
    namespace: Annotated[
        list[str] | None, typer.Option(help="Grant only this namespace (repeatable)")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What the token is for")] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Expire after N days")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token. The secret is printed once; only its hash is stored."""
    expires = timedelta(days=expires_in_days) if expires_in_days else None
    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        new = catalog.create_token(
            scope, namespaces=namespace, description=description, expires_in=expires
        )
    emit(
        new,
        as_json=as_json,
        human=lambda: stdout.print(
            f"token {new.id} ({scope}); store it now, it is not shown again:\n{new.token}",
            markup=False,
        ),
    )


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """Tokens with scopes and grants; never their secrets."""
    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        found = catalog.list_tokens()
    emit(found, as_json=as_json, human=lambda: report.print_tokens(found))


@token_app.command("revoke")
def token_revoke(token_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a token at once."""
    with errors(as_json=as_json), embedded_registry("token management") as catalog:
        info = catalog.revoke_token(token_id)
    emit(info, as_json=as_json, human=lambda: stdout.print(f"revoked token {info.id}"))
