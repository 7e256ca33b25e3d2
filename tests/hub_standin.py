"""A stand-in for the Hugging Face Hub's HTTP API, written by us and served on loopback.

It is not the Hub: it implements the subset of the API that ``huggingface_hub`` calls for
what the ``hf://`` store and plain PEFT users do, with the Hub's wire formats and error headers
(``X-Error-Code``), so the real client library runs unmodified against it:

- ``POST /api/repos/create`` (409 when the repo exists), ``POST /api/validate-yaml``;
- ``POST /api/{type}s/{repo}/preupload/{rev}``: "lfs" for binary or large files, else "regular",
  with the oid of the file already at that path;
- the Git LFS batch API (``/{repo}.git/info/lfs/objects/batch``, basic transfer only), upload
  by PUT (refused unless the bytes hash to the announced oid) and verify. LFS objects belong
  to a repository, as on the Hub, so the same bytes in a second repository are uploaded again;
- ``POST /api/{type}s/{repo}/commit/{branch}``: NDJSON ``header`` (``parentCommit`` answered
  with 412 when the branch moved), ``file``, ``lfsFile``, ``deletedFile``, ``deletedFolder``;
- tags (create: 409 when taken; delete), ``refs``, ``revision/{rev}`` (repo info),
  ``tree/{rev}/{path}`` (``recursive``, ``expand`` with each file's last commit),
  ``commits/{rev}``, ``super-squash/{branch}`` (history collapsed, LFS objects that nothing
  references any more dropped);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, and HTTP Range.

Not implemented: Xet storage (tests set ``HF_HUB_DISABLE_XET=1``, huggingface_hub's own switch,
so it uploads over LFS), CDN redirects, pull requests, pagination, gated or private access
rules. Writes need ``Authorization: Bearer <token>`` when the server was given one; reads are
open. State lives in memory, LFS bytes in a folder.

Run ``python -m tests.hub_standin FOLDER [TOKEN]``: it prints its port, then serves until its
standard input closes (see ``tests.child_server``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

KINDS = {"models": "", "datasets": "datasets/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5")
REGULAR_LIMIT = 10 * 1024 * 1024
POINTER_SIZE = 134
CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    oid: str  # sha256 hex for LFS files, the git blob sha1 for regular ones
    size: int
    lfs: bool
    data: bytes = b""  # regular files only


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    tree: dict[str, Entry]
    changed: dict[str, str]  # path -> sha of the commit that last changed it


@dataclass
class Repo:
    kind: str
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """The stand-in's state and handlers; one instance per server."""

    def __init__(self, folder: Path, token: str | None) -> None:
        self.objects = folder / "lfs"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self._serial = count()

    # -- helpers --------------------------------------------------------------------------

    def _require_write(self, request: Request) -> None:
        if self.token is not None and request.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, request: Request) -> Repo:
        params = request.path_params
        kind = params.get("kind", "models")
        if kind not in KINDS:
            raise HubError(404, f"unknown repo type {kind!r}")
        repo = self.repos.get((kind, f"{params['owner']}/{params['name']}"))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(
        self, repo: Repo, branch: str, tree: dict[str, Entry], title: str, parent: str | None
    ) -> Commit:
        seed = json.dumps([parent, title, next(self._serial), sorted(tree)]).encode()
        sha = hashlib.sha1(seed).hexdigest()
        previous = repo.commits[parent].tree if parent else {}
        old = repo.commits[parent].changed if parent else {}
        changed = {p: (old[p] if previous.get(p) == e else sha) for p, e in tree.items()}
        date = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        commit = Commit(sha, parent, title, date, tree, changed)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def _url(self, request: Request, repo: Repo) -> str:
        return f"{str(request.base_url).rstrip('/')}/{KINDS[repo.kind]}{repo.repo_id}"

    # -- repos ----------------------------------------------------------------------------

    async def create_repo(self, request: Request) -> Response:
        self._require_write(request)
        body = await request.json()
        kind = {None: "models", "model": "models", "dataset": "datasets"}.get(body.get("type"))
        if kind is None or not body.get("name"):
            raise HubError(400, "bad repo type or name")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else ""
        if not repo_id:
            raise HubError(400, "the stand-in needs an explicit owner")
        if (kind, repo_id) in self.repos:
            url = self._url(request, self.repos[(kind, repo_id)])
            raise HubError(409, "You already created this repo", url=url)
        repo = self.repos[(kind, repo_id)] = Repo(kind, repo_id)
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        initial = {
            ".gitattributes": Entry(git_blob_sha1(attributes), len(attributes), False, attributes)
        }
        self._new_commit(repo, "main", initial, "initial commit", None)
        return JSONResponse({"url": self._url(request, repo), "name": repo_id})

    async def validate_yaml(self, request: Request) -> Response:
        await request.body()
        return JSONResponse({})

    async def info(self, request: Request) -> Response:
        repo = self._repo(request)
        commit = self._commit_of(repo, request.path_params.get("revision", "main"))
        return JSONResponse(
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "sha": commit.sha,
                "private": False,
                "lastModified": commit.date,
                "siblings": [{"rfilename": path} for path in sorted(commit.tree)],
                "tags": [],
            }
        )

    async def refs(self, request: Request) -> Response:
        repo = self._repo(request)

        def listed(refs: dict[str, str], kind: str) -> list[dict[str, str]]:
            return [
                {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                for name, sha in sorted(refs.items())
            ]

        return JSONResponse(
            {
                "branches": listed(repo.branches, "heads"),
                "tags": listed(repo.tags, "tags"),
                "converts": [],
            }
        )

    async def commits(self, request: Request) -> Response:
        repo = self._repo(request)
        commit: Commit | None = self._commit_of(repo, request.path_params["revision"])
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": "",
                    "authors": [],
                    "date": commit.date,
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return JSONResponse(history)

    async def tree(self, request: Request) -> Response:
        repo = self._repo(request)
        commit = self._commit_of(repo, request.path_params["revision"])
        base = request.path_params.get("path", "").strip("/")
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        expand = request.query_params.get("expand", "").lower() in ("1", "true")
        prefix = f"{base}/" if base else ""
        under = {p: e for p, e in commit.tree.items() if p.startswith(prefix)}
        if base and not under:
            raise HubError(404, f"{base} does not exist", "EntryNotFound")
        folders: set[str] = set()
        files = []
        for path, entry in sorted(under.items()):
            rest = path[len(prefix) :].split("/")
            if not recursive and len(rest) > 1:
                folders.add(prefix + rest[0])
                continue
            if recursive:
                folders.update(prefix + "/".join(rest[:i]) for i in range(1, len(rest)))
            item: dict[str, Any] = {
                "type": "file",
                "oid": git_blob_sha1(entry.oid.encode()) if entry.lfs else entry.oid,
                "size": entry.size,
                "path": path,
            }
            if entry.lfs:
                item["lfs"] = {"oid": entry.oid, "size": entry.size, "pointerSize": POINTER_SIZE}
            if expand:
                last = repo.commits[commit.changed[path]]
                item["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
            files.append(item)
        listing = [
            {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
            for p in sorted(folders)
        ]
        return JSONResponse(listing + files)

    # -- uploads --------------------------------------------------------------------------

    async def preupload(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        commit = self._commit_of(repo, request.path_params["revision"])
        answers = []
        for item in (await request.json())["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = (
                item["path"].endswith(LFS_SUFFIXES)
                or item["size"] > REGULAR_LIMIT
                or b"\0" in sample
            )
            existing = commit.tree.get(item["path"])
            answers.append(
                {
                    "path": item["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing else None,
                }
            )
        return JSONResponse({"files": answers, "commitOid": commit.sha})

    async def lfs_batch(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        body = await request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "the stand-in only takes uploads through the batch API")
        base = str(request.base_url).rstrip("/")
        kind, (owner, name) = repo.kind, repo.repo_id.split("/")
        objects = []
        for obj in body["objects"]:
            answer: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in repo.lfs:
                answer["actions"] = {
                    "upload": {"href": f"{base}/_lfs/{kind}/{owner}/{name}/{obj['oid']}"},
                    "verify": {"href": f"{base}/_lfs/{kind}/{owner}/{name}/verify"},
                }
            objects.append(answer)
        return JSONResponse({"transfer": "basic", "objects": objects})

    async def lfs_put(self, request: Request) -> Response:
        repo = self._repo(request)
        oid = request.path_params["oid"]
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise HubError(400, "bad oid")
        staged = self.objects / f".{oid}.{next(self._serial)}"
        hasher = hashlib.sha256()
        with staged.open("wb") as out:
            async for chunk in request.stream():
                hasher.update(chunk)
                out.write(chunk)
        if hasher.hexdigest() != oid:
            staged.unlink()
            raise HubError(400, f"uploaded bytes hash to {hasher.hexdigest()}, not {oid}")
        staged.replace(self.objects / oid)
        repo.lfs.add(oid)
        return Response(status_code=200)

    async def lfs_verify(self, request: Request) -> Response:
        repo = self._repo(request)
        body = await request.json()
        path = self.objects / body["oid"]
        if body["oid"] not in repo.lfs or path.stat().st_size != body["size"]:
            raise HubError(404, f"object {body['oid']} was not uploaded")
        return JSONResponse({})

    async def commit(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        branch = request.path_params["revision"]
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line]
        head = repo.commits[repo.branches[branch]]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent is not None and parent != head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(head.tree)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                tree[value["path"]] = Entry(git_blob_sha1(data), len(data), False, data)
            elif key == "lfsFile":
                if value["oid"] not in repo.lfs:
                    raise HubError(422, f"LFS object {value['oid']} was never uploaded")
                tree[value["path"]] = Entry(value["oid"], value["size"], True)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                tree = {p: e for p, e in tree.items() if not p.startswith(folder)}
            elif key != "header":
                raise HubError(400, f"the stand-in does not take {key!r} lines")
        new = self._new_commit(repo, branch, tree, header.get("summary", ""), head.sha)
        return JSONResponse(
            {
                "commitUrl": f"{self._url(request, repo)}/commit/{new.sha}",
                "commitOid": new.sha,
                "success": True,
                "pullRequestUrl": None,
            }
        )

    async def create_tag(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        commit = self._commit_of(repo, request.path_params["revision"])
        tag = (await request.json())["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = commit.sha
        return JSONResponse({})

    async def delete_tag(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        if repo.tags.pop(request.path_params["tag"], None) is None:
            raise HubError(404, "Tag not found", "RevisionNotFound")
        return JSONResponse({})

    async def super_squash(self, request: Request) -> Response:
        self._require_write(request)
        repo = self._repo(request)
        branch = request.path_params["branch"]
        head = self._commit_of(repo, branch)
        message = (await request.json()).get("message", "squash")
        kept = {sha for name, sha in repo.branches.items() if name != branch}
        kept |= set(repo.tags.values())
        repo.commits = {sha: c for sha, c in repo.commits.items() if sha in kept}
        self._new_commit(repo, branch, dict(head.tree), message, None)
        referenced = {e.oid for c in repo.commits.values() for e in c.tree.values() if e.lfs}
        repo.lfs &= referenced
        return JSONResponse({})

    # -- downloads ------------------------------------------------------------------------

    async def resolve(self, request: Request) -> Response:
        repo = self._repo(request)
        commit = self._commit_of(repo, request.path_params["revision"])
        path = request.path_params["path"]
        entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, f"{path} does not exist at {commit.sha}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{git_blob_sha1(entry.oid.encode()) if entry.lfs else entry.oid}"',
            "Accept-Ranges": "bytes",
        }
        if entry.lfs:
            headers |= {"X-Linked-Etag": f'"{entry.oid}"', "X-Linked-Size": str(entry.size)}
        start, end = 0, entry.size - 1
        status = 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if wanted:
            start = int(wanted[1])
            end = min(int(wanted[2]), end) if wanted[2] else end
            if start >= entry.size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{entry.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(end - start + 1)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        if not entry.lfs:
            return Response(entry.data[start : end + 1], status_code=status, headers=headers)
        return StreamingResponse(
            self._read(self.objects / entry.oid, start, end + 1),
            status_code=status,
            headers=headers,
        )

    @staticmethod
    async def _read(path: Path, start: int, stop: int) -> Any:
        with path.open("rb") as source:
            source.seek(start)
            while start < stop and (chunk := source.read(min(CHUNK, stop - start))):
                start += len(chunk)
                yield chunk


def create_app(folder: Path, token: str | None = None) -> Starlette:
    """The stand-in as an ASGI app."""
    hub = Hub(folder, token)
    repo = "/{owner}/{name}"
    api = "/api/{kind}" + repo
    routes = [
        Route("/api/repos/create", hub.create_repo, methods=["POST"]),
        Route("/api/validate-yaml", hub.validate_yaml, methods=["POST"]),
        Route(api, hub.info, methods=["GET"]),
        Route(api + "/revision/{revision}", hub.info, methods=["GET"]),
        Route(api + "/refs", hub.refs, methods=["GET"]),
        Route(api + "/commits/{revision}", hub.commits, methods=["GET"]),
        Route(api + "/tree/{revision}", hub.tree, methods=["GET"]),
        Route(api + "/tree/{revision}/{path:path}", hub.tree, methods=["GET"]),
        Route(api + "/preupload/{revision}", hub.preupload, methods=["POST"]),
        Route(api + "/commit/{revision}", hub.commit, methods=["POST"]),
        Route(api + "/tag/{revision}", hub.create_tag, methods=["POST"]),
        Route(api + "/tag/{tag}", hub.delete_tag, methods=["DELETE"]),
        Route(api + "/super-squash/{branch}", hub.super_squash, methods=["POST"]),
        Route("/_lfs/{kind}" + repo + "/verify", hub.lfs_verify, methods=["POST"]),
        Route("/_lfs/{kind}" + repo + "/{oid}", hub.lfs_put, methods=["PUT"]),
    ]
    for kind, prefix in KINDS.items():
        fixed = {"kind": kind}
        routes += [
            Route(
                f"/{prefix}{{owner}}/{{name}}.git/info/lfs/objects/batch",
                _with(fixed, hub.lfs_batch),
                methods=["POST"],
            ),
            Route(
                f"/{prefix}{{owner}}/{{name}}/resolve/{{revision}}/{{path:path}}",
                _with(fixed, hub.resolve),
                methods=["GET", "HEAD"],
            ),
        ]
    return Starlette(routes=routes, exception_handlers={HubError: _error})  # type: ignore[dict-item]


def _with(params: dict[str, str], handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        request.scope["path_params"] = {**request.path_params, **params}
        return await handler(request)

    return endpoint


async def _error(request: Request, exc: HubError) -> Response:
    headers = {"X-Error-Message": exc.message}
    if exc.code:
        headers["X-Error-Code"] = exc.code
    return JSONResponse(
        {"error": exc.message, **exc.extra}, status_code=exc.status, headers=headers
    )


def main() -> None:
    folder = Path(sys.argv[1])
    token = sys.argv[2] if len(sys.argv) > 2 else None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(
        uvicorn.Config(create_app(folder, token), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    print(sock.getsockname()[1], flush=True)  # listening already: connections queue up
    sys.stdin.read()
    server.should_exit = True
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
