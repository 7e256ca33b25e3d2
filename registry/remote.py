"""``RemoteRegistry``: the registry over HTTP, with the same methods and errors as the local one.

Idempotent calls retry with exponential backoff on connection errors and 5xx (tenacity);
uploads send only the blobs the server lacks (HEAD first); downloads land in the verified
client cache, so a pinned service can start from it.

Every answer is untrusted input: it is parsed into its schema (anything else is an
IntegrityError naming the server), and a resolution must name a valid namespace, name and
version (the publishing rules), the adapter and selector that were asked for, only files a
version may hold, and the digest of exactly those files, before a path is built from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from registry.errors import (
    ERRORS_BY_CODE,
    IntegrityError,
    InvalidAdapter,
    InvalidSpec,
    RegistryError,
)
from registry.lora.config import CARD, CONFIG, WEIGHTS
from registry.lora.files import digest_regular, open_regular
from registry.manifest import CHUNK, FileEntry, Manifest

if TYPE_CHECKING:  # the comparison code loads numpy (~0.4 s): only diff/compare/publish need it
    from registry.lora.compare import Comparison, Diff
from registry.schemas import (
    AdapterDetail,
    AdapterSummary,
    AliasMove,
    AuditEntry,
    Page,
    PublishResult,
    Resolution,
    SearchQuery,
    SimilarAdapter,
    VersionDetail,
    VersionRef,
)
from registry.settings import Settings
from registry.spec import (
    SelectorKind,
    Spec,
    parse_publish_target,
    parse_ref,
    parse_spec,
    parse_version,
    validate_alias,
    validate_digest,
    validate_name,
)
from registry.transfer.cache import Cache, inside
from registry.transfer.http import open_stream, transport_errors

T = TypeVar("T")
# What a version may hold (the server refuses anything else at publish).
VERSION_FILES = frozenset({CONFIG, WEIGHTS, CARD})


class TransferProgress(Protocol):
    """Told about each blob transfer; the CLI draws rich progress bars with it."""

    def begin(self, label: str, total: int) -> Callable[[int], None]: ...


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, _ServerError)


class _ServerError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _error_of(response: httpx.Response) -> RegistryError:
    """The domain error the server raised, from its error response."""
    try:
        body = response.json()
        code, message = body["code"], body["message"]
    except (ValueError, KeyError, TypeError):
        code = response.headers.get("X-Error-Code", "registry_error")
        message = _bodiless_message(response, code)
    return ERRORS_BY_CODE.get(code, RegistryError)(message)


def _bodiless_message(response: httpx.Response, code: str) -> str:
    """A HEAD answer has no body: its X-Error-Code header still says what went wrong."""
    request = response.request
    where = f"the registry at {request.url.scheme}://{request.url.netloc.decode()}"
    if code == "unauthorized":
        if "Authorization" in request.headers:
            return f"{where} refused the token (unauthorized): check STANCE_TOKEN"
        return f"{where} needs a token (unauthorized): set STANCE_TOKEN"
    detail = f": {response.text[:200]}" if response.text.strip() else ""
    return f"{where} answered HTTP {response.status_code} ({code}){detail}"


def _raise_for_error(response: httpx.Response) -> None:
    """Turn an error response back into the domain error the server raised."""
    if response.status_code >= 400:
        raise _error_of(response)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(shape: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per answer shape (building one costs more than a small answer)."""
    found = _ADAPTERS.get(shape)
    if found is None:
        found = _ADAPTERS[shape] = TypeAdapter(shape)
    return found


def _resolution_problem(found: Resolution, spec: Spec, max_size: int) -> str | None:
    """Why ``found`` cannot be the answer to ``spec`` (None: it can)."""
    try:
        validate_name(found.namespace, what="namespace")
        validate_name(found.name)
        parse_version(found.version)
        validate_digest(found.digest)
        manifest = Manifest.of(found.files)
    except (InvalidSpec, InvalidAdapter) as exc:
        return exc.message
    if (found.namespace, found.name) != (spec.namespace, spec.name):
        return f"another adapter ({found.namespace}/{found.name})"
    if spec.kind in (SelectorKind.EXACT, SelectorKind.DIGEST) and spec.selector not in (
        found.version,
        found.digest,
    ):
        return f"another version ({found.version}, {found.digest})"
    for entry in found.files:
        if entry.path not in VERSION_FILES:
            return f"a file no version holds ({entry.path!r})"
        if entry.size > max_size:
            return f"{entry.path} of {entry.size} bytes (the limit is {max_size})"
    if manifest.digest != found.digest:
        return f"digest {found.digest}, which is not the digest of its files ({manifest.digest})"
    return None


class RemoteRegistry:
    """The registry at ``url``; ``STANCE_TOKEN`` (or ``token``) is sent as a bearer token."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        settings: Settings | None = None,
        progress: TransferProgress | None = None,
        timeout: float = 60.0,
        attempts: int = 4,
    ) -> None:
        self.settings = settings or Settings()
        self.url = url.rstrip("/")
        token = token if token is not None else self.settings.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.cache = Cache(self.settings.cache_dir)
        self.progress = progress
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.url!r})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(
        self, method: str, path: str, *, retry: bool = True, absent_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request; idempotent ones are retried. Errors come back as domain errors
        (``absent_ok``: a 404 is an answer, not an error)."""

        def attempt() -> httpx.Response:
            response = self.http.request(method, path, **kwargs)
            if response.status_code >= 500 and retry:
                raise _ServerError(response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts if retry else 1),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            with transport_errors(f"cannot reach the registry at {self.url}"):
                response = retrying(attempt)
        except _ServerError as exc:
            response = exc.response
        if not (absent_ok and response.status_code == 404):
            _raise_for_error(response)
        return response

    def _parsed(self, shape: type[T], response: httpx.Response) -> T:
        """The server's answer as ``shape``; anything else comes from a broken or hostile one."""
        try:
            return _adapter(shape).validate_json(response.content)  # type: ignore[no-any-return]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise IntegrityError(
                f"the registry at {self.url} sent an invalid answer to {response.request.method} "
                f"{response.request.url.path}: {where}: {first['msg']}"
            ) from None

    def _json(self, shape: type[T], method: str, path: str, **kwargs: Any) -> T:
        return self._parsed(shape, self._send(method, path, **kwargs))

    def _trusted(self, found: Resolution, spec: str) -> Resolution:
        """``found`` if it can be the answer to ``spec``; else an IntegrityError, before any
        path is built from it."""
        problem = _resolution_problem(found, parse_spec(spec), self.settings.max_blob_bytes)
        if problem is not None:
            raise IntegrityError(f"the registry at {self.url} answered {spec} with {problem}")
        return found

    # -- publishing --------------------------------------------------------------------------

    def _upload(self, entry: FileEntry, path: Path) -> None:
        advance = self.progress.begin(f"upload {entry.path}", entry.size) if self.progress else None

        def chunks() -> Iterator[bytes]:
            with open_regular(path) as fh:
                while chunk := fh.read(CHUNK):
                    if advance:
                        advance(len(chunk))
                    yield chunk

        self._send(
            "PUT",
            f"/v1/blobs/{entry.digest}",
            content=chunks(),
            headers={"Content-Length": str(entry.size), "Content-Type": "application/octet-stream"},
        )

    def publish(self, folder: Path, target: str, *, alias: str | None = None) -> PublishResult:
        """Upload the blobs the server lacks, then commit the version (inspected server-side)."""
        namespace, name, version = parse_publish_target(target)
        if alias is not None:
            validate_alias(alias)
        # Quick local feedback before any upload (validation only: the metadata is the server's
        # to compute, from the files it receives).
        from registry.lora.inspection import check_dir

        files = check_dir(Path(folder), max_weights_bytes=self.settings.max_weights_bytes)
        manifest = Manifest.of(
            FileEntry(path=name, digest=digest, size=size)
            for name, path in files.items()
            for digest, size in [digest_regular(path)]
        )
        for entry in manifest.files:
            head = self._send("HEAD", f"/v1/blobs/{entry.digest}", absent_ok=True)
            if head.status_code == 404:
                self._upload(entry, files[entry.path])
        body = {
            "version": str(version),
            "files": [f.model_dump() for f in manifest.files],
            "alias": alias,
        }
        response = self._send(
            "POST", f"/v1/adapters/{namespace}/{name}/versions", json=body, retry=False
        )
        return self._parsed(PublishResult, response)

    # -- resolving and fetching ---------------------------------------------------------------

    def resolve(self, spec: str) -> Resolution:
        """The exact version and digest that ``spec`` selects now."""
        parse_spec(spec)
        found = self._json(Resolution, "GET", "/v1/resolve", params={"spec": spec})
        return self._trusted(found, spec)

    def poll(self, spec: str, etag: str | None = None) -> tuple[Resolution | None, str | None]:
        """What ``spec`` resolves to if that changed since ``etag`` (else None), and the new ETag.

        A conditional GET: an unchanged answer costs the server no serialisation and the
        network an empty 304.
        """
        headers = {"If-None-Match": etag} if etag else {}
        response = self._send("GET", "/v1/resolve", params={"spec": spec}, headers=headers)
        if response.status_code == 304:
            return None, etag
        found = self._trusted(self._parsed(Resolution, response), spec)
        return found, response.headers.get("etag")

    def open_blob(self, digest: str, start: int = 0) -> BinaryIO:
        """A blob's bytes from ``start`` on (an HTTP Range request resumes a broken download)."""
        return self._open(digest, start, None)

    def _open(self, digest: str, start: int, size: int | None) -> BinaryIO:
        """``open_blob``; with the blob's declared ``size``, an answer announcing another
        length is refused before its body is read."""
        return open_stream(
            self.http,
            f"/v1/blobs/{validate_digest(digest)}",
            start=start,
            size=size,
            unreachable=f"cannot reach the registry at {self.url}",
            fail=_error_of,
        )

    def _opener(self, resolution: Resolution) -> Callable[[str, int], BinaryIO]:
        sizes = {f.digest: (f.path, f.size) for f in resolution.files}
        progress = self.progress

        def opener(digest: str, start: int = 0) -> BinaryIO:
            path, size = sizes[digest]
            body = self._open(digest, start, size)
            if progress is None:
                return body
            advance = progress.begin(f"download {path}", size - start)
            read = body.read

            def counted(n: int = -1) -> bytes:
                data = read(n)
                advance(len(data))
                return data

            body.read = counted  # type: ignore[method-assign]
            return body

        return opener

    def fetch(self, spec: str, dest: Path | None = None) -> Path:
        """The version's files, verified, in the client cache (or copied into ``dest``)."""
        resolution = self.resolve(spec)
        self.cache.remember(spec, resolution)
        opener = self._opener(resolution)
        folder = self.cache.version(resolution, lambda digest: opener(digest, 0), resume=opener)
        if dest is None:
            return folder
        target = Path(dest)
        target.mkdir(parents=True, exist_ok=True)
        for entry in resolution.files:
            final = inside(target / entry.path, target)
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{entry.path}.")
            os.close(fd)
            shutil.copyfile(folder / entry.path, tmp)
            os.replace(tmp, final)
        return target

    # -- discovery --------------------------------------------------------------------------

    def show(self, spec: str) -> VersionDetail:
        parsed = parse_spec(spec)
        path = f"/v1/adapters/{parsed.namespace}/{parsed.name}/versions/{quote(parsed.selector)}"
        return self._json(VersionDetail, "GET", path)

    def adapter(self, ref: str) -> AdapterDetail:
        namespace, name = parse_ref(ref)
        return self._json(AdapterDetail, "GET", f"/v1/adapters/{namespace}/{name}")

    def search(self, filters: SearchQuery | None = None) -> Page[AdapterSummary]:
        params = (filters or SearchQuery()).params()
        return self._json(Page[AdapterSummary], "GET", "/v1/adapters", params=params)

    def similar(self, spec: str, *, limit: int = 10) -> list[SimilarAdapter]:
        found = self.resolve(spec)
        path = f"/v1/adapters/{found.namespace}/{found.name}/versions/{found.version}/similar"
        return self._json(list[SimilarAdapter], "GET", path, params={"limit": limit})

    def _side(self, value: str) -> tuple[str | None, list]:
        """A local folder, or a spec's files through the verified client cache."""
        from registry.lora.compare import read_folder

        folder = Path(value) if Path(value).exists() else self.fetch(value)
        return read_folder(folder, max_weights_bytes=self.settings.max_weights_bytes)

    def diff(self, x: str, y: str) -> Diff:
        """Exact diff computed here: folders stay local, specs come through the verified cache."""
        from registry.lora.compare import compare

        return compare(x, self._side(x), y, self._side(y))

    def compare(self, specs: list[str]) -> Comparison:
        """Computed here, as ``diff`` is, from verified fetched folders (or local ones)."""
        from registry.lora.compare import check_count, compare_many

        check_count(specs)
        return compare_many([(spec, self._side(spec)) for spec in specs])

    # -- pinning -----------------------------------------------------------------------------

    def set_alias(
        self, ref: str, alias: str, version: str, *, protect: bool | None = None
    ) -> VersionRef:
        namespace, name = parse_ref(ref)
        path = f"/v1/adapters/{namespace}/{name}/aliases/{alias}"
        body = {"version": version, "protected": protect}
        return self._json(VersionRef, "PUT", path, json=body)

    def alias_history(self, ref: str) -> list[AliasMove]:
        namespace, name = parse_ref(ref)
        path = f"/v1/adapters/{namespace}/{name}/aliases/history"
        return self._json(list[AliasMove], "GET", path)

    def audit(
        self, *, limit: int = 100, before: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        params = {"limit": limit, "before": before, "action": action}
        wanted = {k: v for k, v in params.items() if v}
        return self._json(list[AuditEntry], "GET", "/v1/audit", params=wanted)

    def remove_alias(self, ref: str, alias: str) -> None:
        namespace, name = parse_ref(ref)
        self._send("DELETE", f"/v1/adapters/{namespace}/{name}/aliases/{alias}")

    def _version_path(self, spec: str) -> str:
        ref, _, version = spec.partition("@")
        namespace, name = parse_ref(ref)
        return f"/v1/adapters/{namespace}/{name}/versions/{quote(version or 'latest')}/yank"

    def yank(self, spec: str, *, reason: str | None = None) -> VersionRef:
        path = self._version_path(spec)
        return self._json(VersionRef, "POST", path, json={"reason": reason})

    def unyank(self, spec: str) -> VersionRef:
        return self._json(VersionRef, "DELETE", self._version_path(spec))
