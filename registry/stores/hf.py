"""Blobs and releases on the Hugging Face Hub: ``hf://owner``, through ``huggingface_hub``.

Two kinds of repository under ``owner``, both private when this store creates them:

- ``owner/stance-blobs`` (a dataset repo) is the content-addressed store every backend has:
  ``sha256/ab/cd/<hex>`` on ``main``, one commit per upload or removal. It serves the client
  cache, the server's downloads and ``stance gc`` like any other store.
- ``owner/<name>`` (``owner/<namespace>__<name>`` outside the default namespace) is a model
  repo per adapter, for people who never heard of stance: each published version is one
  commit holding exactly the version's files at the root (``adapter_config.json``,
  ``adapter_model.safetensors``, the card, or a generated one) plus ``stance.json``, tagged
  ``v<version>``. The catalog records that commit's SHA, so
  ``PeftModel.from_pretrained(base, "owner/name", revision=sha)`` loads the very bytes the
  registry verified. ``main`` follows the latest publish.

The tag is the Hub-side guard on immutability: a tag already pointing at other content is a
Conflict, the same tag at the same content is an idempotent re-publish. A repository that
exists without our ``stance.json`` (somebody's own model) is never written to. Commits to
``main`` name the head they build on, so of two publishers racing one version, the second to
commit reads the first's untagged commit first: the same content is tagged where it is, other
content is refused without a commit (unless that commit is ``abandoned_after`` old: its
publisher died before tagging it).

Endpoint and token are huggingface_hub's own ``HF_ENDPOINT`` and ``HF_TOKEN`` (or the token
``huggingface-cli login`` saved); uploads go through Xet or LFS as huggingface_hub decides.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoFile, hf_hub_url
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, validate_repo_id

from registry.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidSpec,
    NotFound,
    RangeNotSatisfiable,
    RegistryError,
    TooLarge,
    Unauthorized,
    Unreachable,
)
from registry.lora.format import CARD
from registry.manifest import Manifest
from registry.spec import DEFAULT_NAMESPACE
from registry.stores.base import Release, StoredBlob, blob_key, copy_hashing, copy_verified
from registry.transfer.http import open_stream

BLOBS_REPO = "stance-blobs"
RECORD = "stance.json"  # who this repo belongs to, and what each tagged commit holds
KEEP = {".gitattributes"}  # files of a new Hub repo that a release leaves alone
COMMIT_RETRIES = 5
ABANDONED_AFTER = timedelta(minutes=10)  # an untagged release older than this was given up
_BLOB = re.compile(r"sha256:[0-9a-f]{64}")


# The Hub's HTTP statuses, for both its API (huggingface_hub's errors) and plain downloads.
_BY_STATUS: dict[int, type[RegistryError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    416: RangeNotSatisfiable,
}


def _for_status(status: int) -> type[RegistryError]:
    return _BY_STATUS.get(status, Unreachable if status >= 500 else RegistryError)


def _domain_error(exc: BaseException, what: str) -> RegistryError | None:
    """The registry's error for one of huggingface_hub's, or None if it is not one of those."""
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | RemoteEntryNotFoundError):
        return NotFound(f"{what}: {_message(exc)}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return _for_status(status)(f"{what}: the Hub answered {status}: {_message(exc)}")
    if isinstance(exc, HFValidationError):
        return InvalidSpec(f"{what}: {exc}")
    if isinstance(exc, httpx2.TransportError):
        return Unreachable(f"{what}: cannot reach the Hub ({exc})")
    if isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        return _domain_error(exc.__cause__, what)  # an upload thread's error, wrapped
    return None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """huggingface_hub's exceptions become the registry's own, here and nowhere else."""
    try:
        yield
    except (HfHubHTTPError, HFValidationError, httpx2.TransportError, RuntimeError) as exc:
        error = _domain_error(exc, what)
        if error is None:
            raise
        raise error from exc


@functools.cache
def _http() -> httpx.Client:
    """One connection pool per process for downloads, like huggingface_hub's own session."""
    client = httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0))
    atexit.register(client.close)
    return client


def _message(exc: BaseException) -> str:
    """The last non-empty line of an error: huggingface_hub puts the server's message there."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class HfStore:
    """``hf://owner``: blobs in ``owner/stance-blobs``, each version in ``owner/<name>``."""

    def __init__(
        self,
        owner: str,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        abandoned_after: timedelta = ABANDONED_AFTER,
    ):
        self.owner = owner
        self.abandoned_after = abandoned_after
        self.url = f"hf://{owner}"
        # Read when the store opens, not when huggingface_hub was imported.
        self.endpoint = (
            endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        ).rstrip("/")
        self.api = HfApi(endpoint=self.endpoint, token=token)
        self.blobs = f"{owner}/{BLOBS_REPO}"
        with _translated(f"store URL {self.url!r}"):
            validate_repo_id(self.blobs)
        self._blobs_ready = False

    def __repr__(self) -> str:
        return f"HfStore({self.url!r})"

    # -- the content-addressed store ------------------------------------------------------

    def _missing(self, digest: str) -> str:
        return f"blob {digest} is not in the store {self.url}"

    def _ensure_blobs_repo(self) -> None:
        if not self._blobs_ready:
            with _translated(f"creating {self.blobs} on the Hub"):
                self.api.create_repo(self.blobs, repo_type="dataset", private=True, exist_ok=True)
            self._blobs_ready = True

    def put(self, digest: str, source: BinaryIO) -> None:
        """Upload once; the bytes are hashed into a temp file first, so a mismatch sends none."""
        if self.exists(digest):
            return
        with tempfile.TemporaryDirectory(prefix="stance-hf-") as tmp:
            staged = Path(tmp) / "blob"
            with staged.open("wb") as out:
                actual = copy_hashing(source, out)
            if actual != digest:
                raise IntegrityError(f"blob content hashes to {actual}, not {digest}")
            self._ensure_blobs_repo()
            with _translated(f"uploading blob {digest} to {self.url}"):
                self.api.create_commit(
                    self.blobs,
                    [
                        CommitOperationAdd(
                            path_in_repo=blob_key(digest), path_or_fileobj=str(staged)
                        )
                    ],
                    commit_message=f"Add {digest}",
                    repo_type="dataset",
                )

    def open(self, digest: str, start: int = 0) -> BinaryIO:
        """A streaming reader of the blob on ``main`` from byte ``start`` (an HTTP Range)."""
        return self._download(
            self.blobs, "dataset", blob_key(digest), "main", start, self._missing(digest)
        )

    def exists(self, digest: str) -> bool:
        with _translated(f"looking up blob {digest} in {self.url}"):
            return self.api.file_exists(self.blobs, blob_key(digest), repo_type="dataset")

    def delete(self, digest: str) -> None:
        if not self.exists(digest):
            return
        try:
            with _translated(f"deleting blob {digest} from {self.url}"):
                self.api.create_commit(
                    self.blobs,
                    [CommitOperationDelete(path_in_repo=blob_key(digest))],
                    commit_message=f"Remove {digest}",
                    repo_type="dataset",
                )
        except NotFound:
            pass  # removed meanwhile by another collector

    def iter(self) -> Iterator[StoredBlob]:
        """Every blob on ``main``; its time is that of the commit that added it."""
        try:
            with _translated(f"listing {self.url}"):
                entries = list(
                    self.api.list_repo_tree(
                        self.blobs, "sha256", recursive=True, expand=True, repo_type="dataset"
                    )
                )
        except NotFound:
            return  # no blobs repo, or no blob in it yet
        for entry in entries:
            digest = "sha256:" + entry.path.rsplit("/", 1)[-1]
            if not isinstance(entry, RepoFile) or entry.last_commit is None:
                continue  # a folder
            if _BLOB.fullmatch(digest) and entry.path == blob_key(digest):  # else not ours
                yield StoredBlob(digest, entry.size, entry.last_commit.date.astimezone(UTC))

    def reclaim(self) -> None:
        """Squash the blobs repo's history so the Hub can free what ``delete`` removed."""
        with _translated(f"squashing the history of {self.blobs}"):
            self.api.super_squash_history(
                self.blobs, repo_type="dataset", commit_message="stance gc: drop removed blobs"
            )

    def _download(
        self, repo: str, repo_type: str, path: str, revision: str, start: int, missing: str
    ) -> BinaryIO:
        def fail(response: httpx.Response) -> RegistryError:
            status = response.status_code
            if status == 404:
                return NotFound(missing)
            return _for_status(status)(f"reading {path} from {self.url}: the Hub answered {status}")

        return open_stream(
            _http(),
            hf_hub_url(repo, path, repo_type=repo_type, revision=revision, endpoint=self.endpoint),
            start=start,
            headers=build_hf_headers(token=self.api.token),
            unreachable=f"reading {path} from {self.url}: cannot reach the Hub",
            fail=fail,
        )

    # -- releases: one model repo per adapter ---------------------------------------------

    def repo_for(self, namespace: str, name: str) -> str:
        """The Hub repo of ``namespace/name``; InvalidSpec if the Hub cannot name it so."""
        local = name if namespace == DEFAULT_NAMESPACE else f"{namespace}__{name}"
        repo = f"{self.owner}/{local}"
        with _translated(f"{namespace}/{name} has no valid Hub repo name"):
            validate_repo_id(repo)
        return repo

    def release(
        self, namespace: str, name: str, version: str, manifest: Manifest, base_model: str | None
    ) -> Release:
        """Commit the version's files to its model repo and tag them ``v<version>``.

        Idempotent for the same content; Conflict when the tag holds other content or the repo
        belongs to something else. Reads the blobs back from this store, each verified.
        """
        repo = self.repo_for(namespace, name)
        tag = f"v{version}"
        record = {
            "registry": "stance",
            "namespace": namespace,
            "name": name,
            "version": version,
            "digest": manifest.digest,
            "files": [f.model_dump() for f in manifest.files],
        }
        with _translated(f"releasing {namespace}/{name}@{version} to {repo}"):
            found = self._tagged(repo, tag, record)
            if found is not None:
                return found
            self.api.create_repo(repo, private=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="stance-release-") as tmp:
                folder = Path(tmp)
                copy_verified(self, manifest.files, folder)
                if not (folder / CARD).exists():
                    (folder / CARD).write_text(_card(record, repo, tag, base_model))
                (folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                sha = self._commit(repo, folder, record)
            try:
                self.api.create_tag(repo, tag=tag, revision=sha, tag_message=manifest.digest)
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
                found = self._tagged(repo, tag, record)  # a racing publisher tagged first
                if found is None:
                    raise
                return found
        return Release(repo, sha)

    def _tagged(self, repo: str, tag: str, record: dict[str, Any]) -> Release | None:
        """The release already behind ``tag``: same content is returned, other content refused."""
        try:
            refs = self.api.list_repo_refs(repo)
        except RepositoryNotFoundError:
            return None
        target = next((t.target_commit for t in refs.tags if t.name == tag), None)
        if target is None:
            return None
        theirs = self._record(repo, target)
        if theirs is None or theirs.get("digest") != record["digest"]:
            held = theirs.get("digest") if theirs else "files stance did not publish"
            raise Conflict(
                f"{repo} already has tag {tag} holding {held}; versions are immutable: "
                "publish a new version"
            )
        return Release(repo, target)

    def _record(self, repo: str, revision: str) -> dict[str, Any] | None:
        missing = f"{repo}@{revision} has no {RECORD}"
        try:
            with self._download(repo, "model", RECORD, revision, 0, missing) as body:
                data = json.loads(body.read(1 << 20))
        except NotFound:
            return None
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _commit(self, repo: str, folder: Path, record: dict[str, Any]) -> str:
        """One commit whose tree is exactly ``folder`` (plus KEEP), on top of the head we read."""
        title = f"{record['namespace']}/{record['name']}@{record['version']}"
        for _ in range(COMMIT_RETRIES):
            refs = self.api.list_repo_refs(repo)
            head = next(b.target_commit for b in refs.branches if b.name == "main")
            tree = self.api.list_repo_tree(repo, recursive=True, revision=head)
            present = {f.path for f in tree if isinstance(f, RepoFile)}
            owner = self._record(repo, head) or {}
            mine = (owner.get("registry"), owner.get("namespace"), owner.get("name")) == (
                "stance",
                record["namespace"],
                record["name"],
            )
            if present - KEEP and not mine:
                raise Conflict(
                    f"{repo} exists on the Hub and is not the repo of {title.split('@')[0]}; "
                    "stance will not write to it"
                )
            if mine and owner.get("version") == record["version"]:
                if owner.get("digest") == record["digest"]:
                    return head  # committed by a racing publisher, or one that died untagged
                if not self._abandoned(repo, head):
                    raise Conflict(
                        f"{repo}: another publisher is releasing {title} with other content "
                        f"(commit {head[:12]} on main, not tagged yet); versions are immutable"
                    )
            files = sorted(folder.iterdir())
            operations: list[CommitOperationAdd | CommitOperationDelete] = [
                CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files
            ]
            stale = present - {p.name for p in files} - KEEP
            operations += [CommitOperationDelete(path_in_repo=p) for p in sorted(stale)]
            try:
                info = self.api.create_commit(
                    repo, operations, commit_message=title, parent_commit=head
                )
                return str(info.oid)
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code != 412:
                    raise
                # Another publisher moved main between our read and our commit: read again.
        raise Conflict(f"{repo}: main kept moving during {COMMIT_RETRIES} attempts to commit")

    def _abandoned(self, repo: str, head: str) -> bool:
        """Whether the untagged commit ``head`` is older than ``abandoned_after``."""
        commit = next(iter(self.api.list_repo_commits(repo, revision=head)))
        return datetime.now(UTC) - commit.created_at >= self.abandoned_after


def _card(record: dict[str, Any], repo: str, tag: str, base_model: str | None) -> str:
    """A model card for a version published without one: PEFT metadata and how to load it."""
    meta = ["library_name: peft", "tags:", "- lora", "- stance"]
    base = base_model or "BASE_MODEL"
    try:
        if base_model is not None and not Path(base_model).is_absolute():
            validate_repo_id(base_model)
            meta.append(f"base_model: {base_model}")
    except HFValidationError:
        pass  # a local path or other name the Hub cannot link to
    ref = f"{record['namespace']}/{record['name']}@{record['version']}"
    return "\n".join(
        [
            "---",
            *meta,
            "---",
            f"# {ref}",
            "",
            f"LoRA adapter published from the stance registry (manifest `{record['digest']}`).",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            f'model = PeftModel.from_pretrained(base, "{repo}", revision="{tag}")',
            "```",
            "",
        ]
    )
