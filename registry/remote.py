"""``RemoteRegistry``: the registry over HTTP, with the same methods and errors as the local one.

Idempotent calls retry with exponential backoff on connection errors and 5xx (tenacity);
uploads send only the blobs the server lacks (HEAD first); downloads land in the verified
client cache, so a pinned service can start from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from registry.errors import ERRORS_BY_CODE, RegistryError
from registry.lora.compare import Diff, compare, read_folder
from registry.lora.inspection import check_dir
from registry.manifest import CHUNK, FileEntry, manifest_of
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
from registry.spec import parse_publish_target, parse_ref, parse_spec, validate_alias
from registry.transfer.cache import Cache
from registry.transfer.http import open_stream, transport_errors


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
        code, message = "registry_error", f"HTTP {response.status_code}: {response.text[:200]}"
    return ERRORS_BY_CODE.get(code, RegistryError)(message)


def _raise_for_error(response: httpx.Response) -> None:
    """Turn an error response back into the domain error the server raised."""
    if response.status_code >= 400:
        raise _error_of(response)


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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # -- publishing --------------------------------------------------------------------------

    def _upload(self, entry: FileEntry, path: Path) -> None:
        advance = self.progress.begin(f"upload {entry.path}", entry.size) if self.progress else None

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
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
        files = check_dir(Path(folder), max_weights_bytes=self.settings.max_weights_bytes)
        manifest = manifest_of(files)
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
        return PublishResult(**response.json())

    # -- resolving and fetching ---------------------------------------------------------------

    def resolve(self, spec: str) -> Resolution:
        """The exact version and digest that ``spec`` selects now."""
        parse_spec(spec)
        return Resolution(**self._json("GET", "/v1/resolve", params={"spec": spec}))

    def poll(self, spec: str, etag: str | None = None) -> tuple[Resolution | None, str | None]:
        """What ``spec`` resolves to if that changed since ``etag`` (else None), and the new ETag.

        A conditional GET: an unchanged answer costs the server no serialisation and the
        network an empty 304.
        """
        headers = {"If-None-Match": etag} if etag else {}
        response = self._send("GET", "/v1/resolve", params={"spec": spec}, headers=headers)
        if response.status_code == 304:
            return None, etag
        return Resolution(**response.json()), response.headers.get("etag")

    def open_blob(self, digest: str, start: int = 0) -> BinaryIO:
        """A blob's bytes from ``start`` on (an HTTP Range request resumes a broken download)."""
        return open_stream(
            self.http,
            f"/v1/blobs/{digest}",
            start=start,
            unreachable=f"cannot reach the registry at {self.url}",
            fail=_error_of,
        )

    def _opener(self, resolution: Resolution) -> Callable[[str, int], BinaryIO]:
        if not self.progress:
            return self.open_blob
        sizes = {f.digest: (f.path, f.size) for f in resolution.files}
        progress = self.progress

        def opener(digest: str, start: int = 0) -> BinaryIO:
            path, size = sizes[digest]
            advance = progress.begin(f"download {path}", size - start)
            body = self.open_blob(digest, start)
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
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{entry.path}.")
            os.close(fd)
            shutil.copyfile(folder / entry.path, tmp)
            os.replace(tmp, target / entry.path)
        return target

    # -- discovery --------------------------------------------------------------------------

    def show(self, spec: str) -> VersionDetail:
        parsed = parse_spec(spec)
        path = f"/v1/adapters/{parsed.namespace}/{parsed.name}/versions/{quote(parsed.selector)}"
        return VersionDetail(**self._json("GET", path))

    def adapter(self, ref: str) -> AdapterDetail:
        namespace, name = parse_ref(ref)
        return AdapterDetail(**self._json("GET", f"/v1/adapters/{namespace}/{name}"))

    def search(self, filters: SearchQuery | None = None) -> Page[AdapterSummary]:
        body = self._json("GET", "/v1/adapters", params=(filters or SearchQuery()).params())
        return Page[AdapterSummary](**body)

    def similar(self, spec: str, *, limit: int = 10) -> list[SimilarAdapter]:
        found = self.resolve(spec)
        path = f"/v1/adapters/{found.namespace}/{found.name}/versions/{found.version}/similar"
        return [SimilarAdapter(**s) for s in self._json("GET", path, params={"limit": limit})]

    def diff(self, x: str, y: str) -> Diff:
        """Exact diff computed here: folders stay local, specs come through the verified cache."""

        def side(value: str) -> tuple[str | None, list]:
            folder = Path(value) if Path(value).exists() else self.fetch(value)
            return read_folder(folder, max_weights_bytes=self.settings.max_weights_bytes)

        return compare(x, side(x), y, side(y))

    # -- pinning -----------------------------------------------------------------------------

    def set_alias(
        self, ref: str, alias: str, version: str, *, protect: bool | None = None
    ) -> VersionRef:
        namespace, name = parse_ref(ref)
        path = f"/v1/adapters/{namespace}/{name}/aliases/{alias}"
        body = {"version": version, "protected": protect}
        return VersionRef(**self._json("PUT", path, json=body))

    def alias_history(self, ref: str) -> list[AliasMove]:
        namespace, name = parse_ref(ref)
        path = f"/v1/adapters/{namespace}/{name}/aliases/history"
        return [AliasMove(**m) for m in self._json("GET", path)]

    def audit(
        self, *, limit: int = 100, before: int | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        params = {"limit": limit, "before": before, "action": action}
        body = self._json("GET", "/v1/audit", params={k: v for k, v in params.items() if v})
        return [AuditEntry(**entry) for entry in body]

    def remove_alias(self, ref: str, alias: str) -> None:
        namespace, name = parse_ref(ref)
        self._send("DELETE", f"/v1/adapters/{namespace}/{name}/aliases/{alias}")

    def _version_path(self, spec: str) -> str:
        ref, _, version = spec.partition("@")
        namespace, name = parse_ref(ref)
        return f"/v1/adapters/{namespace}/{name}/versions/{quote(version or 'latest')}/yank"

    def yank(self, spec: str, *, reason: str | None = None) -> VersionRef:
        return VersionRef(**self._json("POST", self._version_path(spec), json={"reason": reason}))

    def unyank(self, spec: str) -> VersionRef:
        return VersionRef(**self._json("DELETE", self._version_path(spec)))
