"""``stance``: publish, find, pin and pull LoRA adapters (see ``stance --help``).

Start-up matters (``stance resolve`` has 0.3 s in all, issue 16): this module imports only
Typer; each command imports the registry modules it uses inside its body.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import context, operate, pinning, serving
from cli.compare import compare
from cli.gc import gc
from cli.group import StanceCommand, StanceGroup
from cli.output import JsonOpt, emit, errors, local_hint, say, stdout, warn
from cli.serve import serve

if TYPE_CHECKING:
    from registry.manifest import FileEntry

PUBLISH, COMPARE, CURATE, PIN, OPERATE = (
    "Publish and find",
    "Compare",
    "Curate",
    "Pin a service",
    "Operate a registry",
)
EXAMPLES = """Examples:
  stance publish ./out curious-uncertainty@1.2.0 --alias staging
  stance search curious
  stance show curious-uncertainty@staging
  stance resolve 'curious-uncertainty@^1.2' --json
  stance pull curious-uncertainty@prod -o ./roles/curious
  stance --registry http://registry:8080 pull team-a/engaged-difficulty

Exit codes: 0 success, 1 registry error, 2 bad usage. Every command takes --json."""


class _Stance(typer.Typer):
    """The ``stance`` executable: a plain ``stance resolve SPEC [--json]`` skips building the
    command tree, whose parameters Typer coerces through pydantic (~0.15 s, half the start-up
    budget of issue 16); every other command line goes through Typer as usual."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plain = _plain_resolve(sys.argv[1:]) if not args and not kwargs else None
        if plain is None:
            return super().__call__(*args, **kwargs)
        try:
            resolve(*plain)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        sys.exit(0)


def _plain_resolve(argv: list[str]) -> tuple[str, bool] | None:
    """``resolve SPEC`` with an optional ``--json`` on either side; None for anything else."""
    if not argv or argv[0] != "resolve" or len(argv) > 3:
        return None
    rest = [a for a in argv[1:] if a != "--json"]
    if len(rest) != 1 or rest[0].startswith("-") or len(argv) - len(rest) > 2:
        return None
    return rest[0], len(argv) == 3


app = _Stance(
    cls=StanceGroup,
    help="Registry for LoRA adapters: publish, discover, pin and pull exact versions.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(cls=StanceGroup, help=help_text, no_args_is_help=True)


db_app = _group("Catalog schema.")
token_app = _group("API tokens (needs the catalog itself: the operator's path).")
alias_app = _group("Mutable, audited pointers such as prod or staging.")


def command(where: typer.Typer = app, name: str | None = None, **options: Any) -> Any:
    return where.command(name, cls=StanceCommand, **options)


SpecArg = Annotated[
    str,
    typer.Argument(
        metavar="SPEC", help="\\[namespace/]name\\[@version|range|alias|digest], e.g. role@^1.2"
    ),
]
RefArg = Annotated[str, typer.Argument(metavar="NAME", help="\\[namespace/]name")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        say(f"stance {version('stance-registry')}")
        raise typer.Exit()


def _global(name: str, help_text: str) -> Any:
    return typer.Option(help=help_text, envvar=f"STANCE_{name.upper()}", show_envvar=True)


@app.callback()
def main(
    home: Annotated[Path | None, _global("home", "Registry home (catalog, blobs, cache)")] = None,
    database_url: Annotated[
        str | None, _global("database_url", "Catalog URL (any SQLAlchemy URL)")
    ] = None,
    store: Annotated[
        str | None, _global("store", "Blob store URL: file://, s3:// or hf://")
    ] = None,
    registry: Annotated[
        str | None, _global("registry", "Registry server URL: talk HTTP to it")
    ] = None,
    token: Annotated[str | None, _global("token", "Bearer token for the server")] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Options given here override the STANCE_* environment."""
    overrides = context.overrides
    overrides.clear()
    local_hint.clear()
    for key, value in {
        "home": home,
        "database_url": database_url,
        "store": store,
        "registry": registry,
        "token": token,
    }.items():
        if value is not None:
            overrides[key] = str(value)


# -- publish and find -------------------------------------------------------------------------


@command(
    rich_help_panel=PUBLISH,
    epilog="Example: stance publish ./out team-a/curious-uncertainty@1.3.0 --alias staging",
)
def publish(
    folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder (save_pretrained output)")],
    target: Annotated[
        str,
        typer.Argument(metavar="NAME@VERSION", help="\\[namespace/]name@version, e.g. role@1.0.0"),
    ],
    alias: Annotated[str | None, typer.Option(help="Also point this alias at the version")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate an adapter folder and publish it as an immutable version."""
    with errors(as_json=as_json), context.open_registry() as registry:
        result = registry.publish(folder, target, alias=alias)
    for message in result.warnings:
        warn(message)
    verb = "published" if result.created else "already published (identical content)"
    emit(
        result.model_dump(include={"namespace", "name", "version", "digest"}),
        as_json=as_json,
        human=lambda: say(
            f"{verb} {result.namespace}/{result.name}@{result.version} {result.digest}"
            + (f" (alias {alias})" if alias else "")
        ),
    )


@command(name="inspect", rich_help_panel=PUBLISH)
def inspect_cmd(
    folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder")],
    as_json: JsonOpt = False,
) -> None:
    """Validate an adapter folder and report its metadata and fingerprint; publishes nothing."""
    from cli import report
    from registry.lora.inspection import inspect_dir

    with errors(as_json=as_json):
        inspection = inspect_dir(folder, max_weights_bytes=context.settings().max_weights_bytes)
    for message in inspection.warnings:
        warn(message)
    info = inspection.info.model_dump(mode="json")
    emit(info, as_json=as_json, human=lambda: report.print_info(info, title=str(folder)))


@command(rich_help_panel=PUBLISH, epilog="Example: stance search curious --target q_proj --rank 8")
def search(
    text: Annotated[str | None, typer.Argument(help="Text in the adapter name")] = None,
    base_model: Annotated[str | None, typer.Option(help="Exact base model id")] = None,
    target: Annotated[str | None, typer.Option(help="A targeted module, e.g. q_proj")] = None,
    rank: Annotated[int | None, typer.Option(metavar="R", help="LoRA rank r")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only this namespace")] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find adapters by name and by what their versions target."""
    from cli import report
    from registry.schemas import SearchQuery

    with errors(as_json=as_json), context.open_registry() as registry:
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


@command(rich_help_panel=PUBLISH, epilog="Example: stance show curious-uncertainty@prod")
def show(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """Metadata and fingerprint of a published version."""
    from cli import report

    with errors(as_json=as_json), context.open_registry() as registry:
        detail = registry.show(spec)
    if detail.yanked:
        warn(f"{detail.namespace}/{detail.name}@{detail.version} is yanked: {detail.yanked_reason}")
    data = {**detail.info, **detail.model_dump(mode="json", exclude={"info"})}
    emit(data, as_json=as_json, human=lambda: report.print_version(detail))


@command(rich_help_panel=PUBLISH)
def versions(ref: RefArg, as_json: JsonOpt = False) -> None:
    """Every version of an adapter, newest first, with yanks and aliases."""
    from cli import report

    with errors(as_json=as_json), context.open_registry() as registry:
        detail = registry.adapter(ref)
    emit(detail, as_json=as_json, human=lambda: report.print_versions(detail))


def _resolve_quickly(spec: str) -> Any:
    """The stdlib-sqlite3 answer on a local SQLite catalog, or None (see catalog.sqlite_direct)."""
    if context.server_url():
        return None
    from registry.catalog.sqlite_direct import resolve as resolve_direct

    return resolve_direct(context.catalog_url(), spec)


@command(
    rich_help_panel=PUBLISH,
    epilog="Example: stance resolve 'curious-uncertainty@^1.2' --json",
)
def resolve(spec: SpecArg, as_json: JsonOpt = False) -> None:
    """The exact version and digest a spec selects (for pinning)."""
    with errors(as_json=as_json):
        found = _resolve_quickly(spec)
        if found is None:
            with context.open_registry() as registry:
                found = registry.resolve(spec)
    if found.yanked:
        warn(f"{found.spec} is yanked: {found.yanked_reason or 'no reason given'}")
    emit(
        {k: getattr(found, k) for k in ("namespace", "name", "version", "digest", "yanked")},
        as_json=as_json,
        human=lambda: say(f"{found.spec} {found.digest}"),
    )


def _refuse_overwrite(folder: Path, files: list[FileEntry]) -> None:
    """A pull never replaces other content silently: a re-pull of the same files is fine."""
    from registry.errors import Conflict
    from registry.manifest import digest_file

    clashes = []
    for entry in files:
        path = folder / entry.path
        if not path.exists() and not path.is_symlink():
            continue
        same = path.is_file() and path.stat().st_size == entry.size
        if not (same and digest_file(path)[0] == entry.digest):
            clashes.append(entry.path)
    if clashes:
        raise Conflict(
            f"{folder} already holds other content in {', '.join(clashes)}: "
            "pass --force to overwrite, or -o another folder"
        )


@command(rich_help_panel=PUBLISH, epilog="Example: stance pull curious-uncertainty@prod -o ./roles")
def pull(
    spec: SpecArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="DIR", help="Folder [default: ./NAME]")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files there that hold other content")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a version's files, each verified against its digest."""
    with errors(as_json=as_json), context.open_registry() as registry:
        found = registry.resolve(spec)
        if found.yanked:
            warn(f"{found.spec} is yanked: {found.yanked_reason or 'no reason given'}")
        destination = output or Path.cwd() / found.name
        if not force:
            _refuse_overwrite(destination, found.files)
        folder = registry.fetch(found.spec, destination)
    result = {
        **found.model_dump(include={"namespace", "name", "version", "digest"}),
        "path": str(folder),
        "files": [f.path for f in found.files],
    }
    emit(result, as_json=as_json, human=lambda: say(f"pulled {found.spec} into {folder}"))


# -- compare ----------------------------------------------------------------------------------


@command(
    rich_help_panel=COMPARE,
    epilog="Example: stance diff curious-uncertainty@1.2.0 curious-uncertainty@1.3.0 --all",
)
def diff(
    x: Annotated[str, typer.Argument(metavar="X", help="A published spec, or an adapter folder")],
    y: Annotated[str, typer.Argument(metavar="Y", help="A published spec, or an adapter folder")],
    top: Annotated[
        int, typer.Option(metavar="N", min=1, help="Show the N modules that weigh most")
    ] = 12,
    show_all: Annotated[bool, typer.Option("--all", help="Show every module")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Exact cosine similarity of two adapters' updates, module by module.

    An existing folder wins over a spec of the same name. --json always lists every module.
    """
    from cli import report

    with errors(as_json=as_json), context.open_registry() as registry:
        result = registry.diff(x, y)
    for message in result.warnings:
        warn(message)
    rows = None if show_all else top
    emit(result, as_json=as_json, human=lambda: report.print_diff(result, top=rows))


@command(rich_help_panel=COMPARE)
def similar(
    spec: SpecArg,
    limit: Annotated[int, typer.Option(metavar="N", min=1, max=100)] = 10,
    min_cosine: Annotated[
        float,
        typer.Option(
            metavar="C",
            min=0.0,
            max=1.0,
            help="Leave out adapters whose |cosine| is below C (orthogonal: nothing shared)",
        ),
    ] = 0.05,
    as_json: JsonOpt = False,
) -> None:
    """Published adapters on the same base model whose updates point the same way."""
    from cli import report

    with errors(as_json=as_json), context.open_registry() as registry:
        found = registry.similar(spec, limit=limit)
    shown = [s for s in found if abs(s.cosine) >= min_cosine]
    emit(
        shown,
        as_json=as_json,
        human=lambda: report.print_similar(
            shown, left_out=len(found) - len(shown), below=min_cosine
        ),
    )


command(rich_help_panel=COMPARE)(compare)


# -- curate -----------------------------------------------------------------------------------

app.add_typer(alias_app, name="alias", rich_help_panel=CURATE)


@command(alias_app, "set", epilog="Example: stance alias set curious-uncertainty prod 1.2.0")
def alias_set(
    ref: RefArg,
    alias: Annotated[str, typer.Argument(metavar="ALIAS")],
    version: Annotated[str, typer.Argument(metavar="VERSION")],
    protect: Annotated[
        bool | None,
        typer.Option("--protect/--unprotect", help="Only admins may move a protected alias"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS of an adapter at an exact VERSION."""
    with errors(as_json=as_json), context.open_registry() as registry:
        target = registry.set_alias(ref, alias, version, protect=protect)
    emit(
        {**target.model_dump(), "alias": alias},
        as_json=as_json,
        human=lambda: say(f"{target.spec} is now {alias}"),
    )


@command(alias_app, "rm")
def alias_rm(
    ref: RefArg, alias: Annotated[str, typer.Argument(metavar="ALIAS")], as_json: JsonOpt = False
) -> None:
    """Remove an alias (its history stays)."""
    with errors(as_json=as_json), context.open_registry() as registry:
        registry.remove_alias(ref, alias)
    emit({"removed": alias}, as_json=as_json, human=lambda: say(f"removed alias {alias}"))


@command(alias_app, "list")
def alias_list(ref: RefArg, as_json: JsonOpt = False) -> None:
    """The aliases of an adapter."""
    with errors(as_json=as_json), context.open_registry() as registry:
        detail = registry.adapter(ref)

    def human() -> None:
        from rich.table import Table

        table = Table("alias", "version", "updated by", "updated at")
        for a in detail.aliases:
            table.add_row(a.name, a.version, a.updated_by, f"{a.updated_at:%Y-%m-%d %H:%M}")
        stdout.print(table)

    emit(detail.aliases, as_json=as_json, human=human)


@command(alias_app, "history")
def alias_history(ref: RefArg, as_json: JsonOpt = False) -> None:
    """Who moved which alias from what to what, and when (newest first)."""
    from cli import report

    with errors(as_json=as_json), context.open_registry() as registry:
        moves = registry.alias_history(ref)
    emit(moves, as_json=as_json, human=lambda: report.print_alias_history(moves))


VersionSpecArg = Annotated[
    str, typer.Argument(metavar="NAME@VERSION", help="\\[namespace/]name@version")
]


@command(rich_help_panel=CURATE, epilog='Example: stance yank curious@1.2.0 --reason "bad eval"')
def yank(
    spec: VersionSpecArg,
    reason: Annotated[str | None, typer.Option(help="Shown to everyone who resolves it")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hide a version from ranges and latest; exact pins still resolve (with a warning)."""
    with errors(as_json=as_json), context.open_registry() as registry:
        ref = registry.yank(spec, reason=reason)
    emit(ref, as_json=as_json, human=lambda: say(f"yanked {ref.spec}"))


@command(rich_help_panel=CURATE)
def unyank(spec: VersionSpecArg, as_json: JsonOpt = False) -> None:
    """Undo a yank."""
    with errors(as_json=as_json), context.open_registry() as registry:
        ref = registry.unyank(spec)
    emit(ref, as_json=as_json, human=lambda: say(f"unyanked {ref.spec}"))


# -- pin a service ----------------------------------------------------------------------------

for step in (pinning.lock, pinning.sync, pinning.verify, pinning.export):
    command(rich_help_panel=PIN)(step)
command(rich_help_panel=PIN)(serving.follow)


# -- operate a registry -----------------------------------------------------------------------

command(rich_help_panel=OPERATE)(serve)
app.add_typer(token_app, name="token", rich_help_panel=OPERATE)
command(
    token_app,
    "create",
    epilog="Example: stance token create --scope publish --namespace team-a --json",
)(operate.token_create)
command(token_app, "list")(operate.token_list)
command(token_app, "revoke")(operate.token_revoke)
command(rich_help_panel=OPERATE)(operate.audit)
command(rich_help_panel=OPERATE)(gc)
app.add_typer(db_app, name="db", rich_help_panel=OPERATE)
command(db_app, "upgrade")(operate.db_upgrade)
