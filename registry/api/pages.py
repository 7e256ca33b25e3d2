"""Server-rendered discovery pages; each has a JSON twin under /v1 and links to it.

Errors on a page are pages too (an HTML 404 or 400 saying what is wrong), never raw JSON.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import nh3
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pydantic import ValidationError
from rich.filesize import decimal

from registry.api import svg
from registry.api.auth import require_read
from registry.api.deps import SessionDep, StateDep
from registry.api.errors import status_of
from registry.catalog import analysis, queries
from registry.errors import InvalidSpec, NotFound, RegistryError
from registry.manifest import CHUNK, FileEntry
from registry.schemas import SearchQuery, VersionDetail, VersionSummary

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["size"] = decimal  # the CLI prints sizes the same way
router = APIRouter(
    include_in_schema=False,
    default_response_class=HTMLResponse,
    dependencies=[Depends(require_read)],
)

CARD_LIMIT = 512 * 1024  # a model card larger than this is linked, not rendered
IMMUTABLE = "public, max-age=31536000, immutable"
# How a version's files are served from the pages: a name and a type a browser can use.
MEDIA = {".md": "text/plain; charset=utf-8", ".json": "application/json", ".txt": "text/plain"}
_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
_FRONT_MATTER = re.compile(r"\A---\r?\n(.*?)\r?\n---\r?\n", re.DOTALL)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def error_page(request: Request, status: int, code: str, message: str) -> HTMLResponse:
    """The HTML twin of an API error: the same status, code and message."""
    response = _page(
        request, "error.html", {"status": status, "code": code, "message": message}, status
    )
    response.headers["X-Error-Code"] = code
    return response


def html_errors(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Domain errors of a page handler become HTML error pages (the API answers JSON)."""

    @functools.wraps(handler)
    def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return handler(request, *args, **kwargs)
        except RegistryError as exc:
            return error_page(request, status_of(exc), exc.code, exc.message)

    return wrapped


_FILTERS = ("q", "base_model", "target", "rank", "namespace", "cursor", "limit")


@router.get("/")
@html_errors
def search_page(request: Request, session: SessionDep) -> Response:
    """Search; a filter that does not parse is a 400 page naming it (never silently dropped)."""
    given = {k: v for k, v in request.query_params.items() if k in _FILTERS}
    try:
        filters = SearchQuery.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "query"
        message = f"{field}={given.get(field, '')!r}: {first['msg']}"
        return error_page(request, 400, "bad_request", message)
    page = queries.search(session, filters)
    shown = {k: v for k, v in filters.params().items() if k not in ("cursor", "limit")}
    return _page(request, "search.html", {"page": page, "filters": shown, "more": page.next_cursor})


@router.get("/adapters/{namespace}/{name}")
@html_errors
def adapter_page(request: Request, session: SessionDep, namespace: str, name: str) -> Response:
    detail = queries.adapter_detail(session, f"{namespace}/{name}")
    by_version: dict[str, list[str]] = {}
    for alias in detail.aliases:
        by_version.setdefault(alias.version, []).append(alias.name)
    history = queries.alias_history(session, f"{namespace}/{name}")
    return _page(
        request, "adapter.html", {"adapter": detail, "aliases_of": by_version, "history": history}
    )


def _model_card(app: Any, files: list[FileEntry]) -> Markup | None:
    """The README rendered as sanitised HTML: markdown-it-py parses, nh3 (ammonia) cleans.

    Raw HTML in a card is allowed through the parser and then cleaned: scripts, event
    handlers, styles and javascript: links never reach the page.
    """
    entry = next((f for f in files if f.path.lower() == "readme.md"), None)
    if entry is None or entry.size > CARD_LIMIT:
        return None
    try:
        with app.store.open(entry.digest) as source:
            data = source.read(CARD_LIMIT + 1)
    except RegistryError as exc:  # the store is down or lost it: the rest of the page stands
        return Markup(f'<p class="yanked">{escape(exc.message)}</p>')  # noqa: S704
    if "sha256:" + hashlib.sha256(data).hexdigest() != entry.digest:
        return Markup('<p class="yanked">The model card did not match its digest.</p>')
    text = data.decode("utf-8", errors="replace")
    front = _FRONT_MATTER.match(text)
    meta = ""
    if front:
        text = text[front.end() :]
        meta = f"<details><summary>card metadata</summary><pre>{escape(front[1])}</pre></details>"
    html = nh3.clean(meta + _MARKDOWN.render(text), link_rel="noopener noreferrer nofollow")
    return Markup(html)  # noqa: S704 - cleaned by nh3 just above


def _neighbours(versions: list[VersionSummary], version: str) -> tuple[str | None, str | None]:
    """The versions just below and just above ``version`` (the list is newest first)."""
    order = [v.version for v in versions]
    at = order.index(version) if version in order else -1
    if at < 0:
        return None, None
    older = order[at + 1] if at + 1 < len(order) else None
    newer = order[at - 1] if at > 0 else None
    return older, newer


def _usage(request: Request, detail: VersionDetail) -> dict[str, str]:
    """Copy-ready ways to use a version: pin, pull, RoleSet, PEFT and vLLM."""
    server = str(request.base_url).rstrip("/")
    ref = detail.name if detail.namespace == "default" else f"{detail.namespace}/{detail.name}"
    spec = f"{detail.namespace}/{detail.name}@{detail.version}"
    base = detail.info.get("base_model") or "BASE_MODEL"
    folder = f"./{detail.name}"
    if detail.hub_repo:
        peft_source = f'"{detail.hub_repo}", revision="{detail.hub_revision}"'
    else:
        peft_source = f'"{folder}"  # after the stance pull above'
    return {
        "pin": f'"{ref}" = "{detail.version}"' if "/" in ref else f'{ref} = "{detail.version}"',
        "pull": f"stance --registry {server} pull {spec} -o {folder}",
        "roleset": (
            "from registry import Registry, RoleSet\n\n"
            f'roles = RoleSet(model, registry=Registry("{server}"))\n'
            f'roles.load("{spec}")\n'
            f'roles.switch("{detail.name}")'
        ),
        "peft": (
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
            f"model = PeftModel.from_pretrained(base, {peft_source})"
        ),
        "vllm": (
            f"vllm serve {base} --enable-lora --max-lora-rank {detail.info.get('r', 8)} "
            f"--lora-modules {detail.name}={folder}"
        ),
    }


@router.get("/adapters/{namespace}/{name}/{version}")
@html_errors
def version_page(
    request: Request, app: StateDep, session: SessionDep, namespace: str, name: str, version: str
) -> Response:
    detail = queries.version_detail(session, f"{namespace}/{name}@{version}")
    siblings = queries.adapter_detail(session, f"{namespace}/{name}").versions
    older, newer = _neighbours(siblings, detail.version)
    fingerprint = detail.info["fingerprint"]
    return _page(
        request,
        "version.html",
        {
            "v": detail,
            "info": detail.info,
            "heat_map": Markup(svg.heat_map(fingerprint)),  # noqa: S704 - values escaped in svg.py
            "energy_chart": Markup(svg.energy_chart(fingerprint)),  # noqa: S704 - same
            "card": _model_card(app, detail.files),
            "use": _usage(request, detail),
            "older": older,
            "newer": newer,
        },
    )


def _chunks(app: Any, digest: str) -> Iterator[bytes]:
    with app.store.open(digest) as source:
        while chunk := source.read(CHUNK):
            yield chunk


@router.get("/adapters/{namespace}/{name}/{version}/files/{path}")
@html_errors
def version_file(
    request: Request,
    app: StateDep,
    session: SessionDep,
    namespace: str,
    name: str,
    version: str,
    path: str,
    download: Annotated[bool, Query(description="save it rather than show it")] = False,
) -> Response:
    """One file of a version under its own name: text shown inline, weights downloaded."""
    found = queries.resolve_spec(session, f"{namespace}/{name}@{version}")
    entry = next((f for f in found.files if f.path == path), None)
    if entry is None:
        raise NotFound(f"{found.spec} has no file {path!r}")
    media = MEDIA.get(Path(path).suffix.lower())
    disposition = "attachment" if download or media is None else "inline"
    headers = {
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(path)}",
        "Content-Length": str(entry.size),
        "ETag": f'"{entry.digest}"',
        "X-Content-Type-Options": "nosniff",
        # An exact version's files never change; an alias or range may point elsewhere tomorrow.
        "Cache-Control": IMMUTABLE if version == found.version else "no-cache",
    }
    return StreamingResponse(
        _chunks(app, entry.digest),
        media_type=media or "application/octet-stream",
        headers=headers,
    )


@router.get("/diff")
@html_errors
def diff_page(
    request: Request,
    app: StateDep,
    session: SessionDep,
    x: Annotated[str, Query(max_length=200)] = "",
    y: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Two published versions side by side: the exact cosine and where they agree."""
    context: dict[str, Any] = {"x": x, "y": y, "result": None}
    if x.strip() and y.strip():
        result = analysis.diff(
            session,
            app.store,
            x.strip(),
            y.strip(),
            folders=False,
            max_weights_bytes=app.settings.max_weights_bytes,
        )
        modules = sorted(
            result.modules, key=lambda m: (m.layer is None, m.layer or 0, m.module, m.path)
        )
        context["result"] = result
        context["modules"] = modules
        context["cosine_map"] = Markup(  # noqa: S704 - values escaped in svg.py
            svg.cosine_map([m.model_dump() for m in modules])
        )
    elif x.strip() or y.strip():
        raise InvalidSpec("name both versions to compare: /diff?x=SPEC&y=SPEC")
    return _page(request, "diff.html", context)
