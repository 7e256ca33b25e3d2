"""A hostile (or intercepted) registry: every answer it gives is untrusted input to the client.

The server here is written for the test: real HTTP on loopback, answering ``/v1/resolve`` with
crafted resolutions and ``/v1/blobs/...`` with crafted bodies. The client (``stance pull`` and
``RemoteRegistry``) must refuse each with one clean ``integrity`` error, write nothing outside
its folders and leave every file it was pointed at exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from registry.errors import IntegrityError
from registry.manifest import FileEntry, Manifest
from registry.remote import RemoteRegistry
from registry.settings import Settings
from tests.api.conftest import STANCE

CONFIG = b'{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}'


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _entry(path: str, data: bytes) -> dict[str, Any]:
    return {"path": path, "digest": _digest(data), "size": len(data)}


def _resolution(files: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A resolution whose digest is honest for ``files`` unless ``fields`` says otherwise."""
    try:
        digest = Manifest.of(FileEntry(**f) for f in files).digest
    except ValueError:  # a file entry the manifest refuses: the digest cannot be honest
        digest = "sha256:" + "0" * 64
    answer = {"namespace": "default", "name": "role", "version": "1.0.0", "digest": digest}
    return {**answer, "yanked": False, "files": files, **fields}


class Hostile:
    """What the server answers: a resolution (any JSON) and blob bodies by digest."""

    def __init__(self) -> None:
        self.resolution: Any = None
        self.blobs: dict[str, bytes] = {}
        self.content_length: dict[str, int] = {}  # a lying Content-Length for a digest
        self.sent: dict[str, int] = {}  # bytes of each blob actually written to the socket
        self.answers: dict[str, Any] = {}  # any other GET, by path without the query


def _handler(hostile: Hostile) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

        def _json(self, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/v1/resolve"):
                self._json(hostile.resolution)
                return
            if self.path.partition("?")[0] in hostile.answers:
                self._json(hostile.answers[self.path.partition("?")[0]])
                return
            digest = self.path.rpartition("/")[2]
            data = hostile.blobs.get(digest)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            length = hostile.content_length.get(digest)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            hostile.sent[digest] = 0
            try:
                for start in range(0, len(data), 65536):
                    self.wfile.write(data[start : start + 65536])
                    hostile.sent[digest] += len(data[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up: what it must do when it has had enough
            self.close_connection = True

    return Handler


@pytest.fixture
def hostile() -> Iterator[tuple[Hostile, str]]:
    answers = Hostile()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(answers))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answers, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every file and link under ``root`` with its content (a link: its target)."""
    found: dict[str, bytes | str] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder a hostile answer aims at; it must stay exactly as it is."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (folder / "adapter_config.json").write_text("mine")
    return folder


def _pull(url: str, home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STANCE_REGISTRY": url, "STANCE_HOME": str(home)}
    return subprocess.run(
        [STANCE, "pull", "role@1.0.0", "--json", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _crafted(victim: Path) -> dict[str, Callable[[], Any]]:
    """Answers that name paths outside the client's folders or lie about their files."""
    pwned = b"pwned"
    planted = [_entry("precious.txt", pwned), _entry("adapter_config.json", pwned)]
    config = [_entry("adapter_config.json", CONFIG)]
    return {
        "absolute namespace": lambda: _resolution(
            planted, namespace=str(victim), name=".", version="."
        ),
        "relative namespace": lambda: _resolution(
            planted, namespace="../../../../../" + str(victim).lstrip("/"), name=".", version="."
        ),
        "dotted name": lambda: _resolution(config, name="..", version="1.0.0"),
        "version as path": lambda: _resolution(config, version="../../../x"),
        "file outside the folder": lambda: _resolution([_entry("../precious.txt", pwned)]),
        "a file a version never holds": lambda: _resolution([_entry(".bashrc", pwned)]),
        "digest not of these files": lambda: _resolution(config, digest=_digest(b"other")),
        "another adapter than asked": lambda: _resolution(config, name="other"),
        "negative size": lambda: _resolution(
            [{**_entry("adapter_config.json", CONFIG), "size": -1}]
        ),
        "not a resolution": lambda: ["a", "list"],
    }


def _remote(url: str, tmp_path: Path) -> RemoteRegistry:
    return RemoteRegistry(url, settings=Settings(home=tmp_path / "home"), attempts=1)


def _serve(answers: Hostile, victim: Path, case: str) -> None:
    answers.resolution = _crafted(victim)[case]()
    files = answers.resolution.get("files", []) if isinstance(answers.resolution, dict) else []
    for f in files:
        answers.blobs[f["digest"]] = b"pwned" if f["size"] == 5 else CONFIG


def _untouched(tmp_path: Path, victim: Path, before: dict[str, bytes | str]) -> None:
    assert _tree(victim) == before
    assert _tree(tmp_path / "cwd") == {}
    assert not (tmp_path / "out").exists() or _tree(tmp_path / "out") == {}
    versions = tmp_path / "home" / "cache" / "versions"
    assert not versions.exists() or not any(versions.rglob("*"))
    # Nothing was written anywhere but the client's home and the folders named above.
    assert {p.name for p in tmp_path.iterdir()} <= {"home", "cwd", "victim", "out"}


@pytest.mark.parametrize("case", list(_crafted(Path("/x"))))
@pytest.mark.parametrize("into", ["cache", "output"])
def test_fetch_refuses_crafted_resolutions(
    hostile: tuple[Hostile, str],
    victim: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    into: str,
) -> None:
    answers, url = hostile
    _serve(answers, victim, case)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = _tree(victim)
    with _remote(url, tmp_path) as remote, pytest.raises(IntegrityError, match=url):
        remote.fetch("role@1.0.0", tmp_path / "out" if into == "output" else None)
    _untouched(tmp_path, victim, before)


@pytest.mark.parametrize("into", ["cache", "output"])
def test_stance_pull_refuses_a_namespace_that_is_a_path(
    hostile: tuple[Hostile, str], victim: Path, tmp_path: Path, into: str
) -> None:
    """The reported attack, through the CLI: one ``error:`` line, exit 1, nothing touched."""
    answers, url = hostile
    _serve(answers, victim, "absolute namespace")
    (tmp_path / "cwd").mkdir()
    before = _tree(victim)
    args = ("-o", str(tmp_path / "out")) if into == "output" else ()
    done = _pull(url, tmp_path / "home", tmp_path / "cwd", *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["code"] == "integrity", done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    _untouched(tmp_path, victim, before)


def test_a_blob_larger_than_declared_is_refused_while_downloading(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    answers, url = hostile
    entry = _entry("adapter_config.json", CONFIG)
    answers.resolution = _resolution([entry])
    flood = CONFIG + b" " * (64 * 1024 * 1024)  # the digest's bytes, then 64 MiB more
    answers.blobs[entry["digest"]] = flood
    with _remote(url, tmp_path) as remote, pytest.raises(IntegrityError, match="more than"):
        remote.fetch("role@1.0.0")
    blobs = tmp_path / "home" / "cache" / "blobs"
    assert not blobs.exists() or [p.name for p in blobs.iterdir()] == []
    # The client hung up soon after the declared size; it never read the whole flood.
    assert answers.sent[entry["digest"]] < len(flood) // 2


def test_a_content_length_other_than_declared_is_refused_before_reading(
    hostile: tuple[Hostile, str], tmp_path: Path
) -> None:
    answers, url = hostile
    entry = _entry("adapter_config.json", CONFIG)
    answers.resolution = _resolution([entry])
    answers.blobs[entry["digest"]] = CONFIG + b" " * (8 * 1024 * 1024)
    answers.content_length[entry["digest"]] = len(CONFIG) + 8 * 1024 * 1024
    with _remote(url, tmp_path) as remote, pytest.raises(IntegrityError, match="Content-Length"):
        remote.fetch("role@1.0.0")
    assert not any((tmp_path / "home" / "cache").rglob("*.partial"))


def test_an_honest_answer_still_pulls(hostile: tuple[Hostile, str], tmp_path: Path) -> None:
    """The refusals above are about the answers, not the server: honest bytes are accepted."""
    answers, url = hostile
    entry = _entry("adapter_config.json", CONFIG)
    answers.resolution = _resolution([entry])
    answers.blobs[entry["digest"]] = CONFIG
    with _remote(url, tmp_path) as remote:
        folder = remote.fetch("role@1.0.0", tmp_path / "out")
    assert (folder / "adapter_config.json").read_bytes() == CONFIG
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json"]


# Terminal escapes (colour, window title, a bell) and rich markup in the publisher's text.
ESCAPES = "\x1b[31mred\x1b]0;pwned\x07\u202e"
MARKUP = "[bold red]loud[/bold red]"


def _stance(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STANCE_REGISTRY": url, "STANCE_HOME": str(home)}
    env.pop("STANCE_DATABASE_URL", None)
    return subprocess.run([STANCE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_show_and_search_print_publisher_text_as_text(
    hostile: tuple[Hostile, str], tmp_path: Path, adapters: dict[str, Path]
) -> None:
    from registry.embedded import EmbeddedRegistry

    with EmbeddedRegistry(Settings(home=tmp_path / "real"), actor="seed") as real:
        real.publish(adapters["curious"], "role@1.0.0")
        detail = real.show("role@1.0.0").model_dump(mode="json")
        page = real.search().model_dump(mode="json")
    hostile_text = f"{ESCAPES}{MARKUP}"
    detail["info"]["base_model"] = hostile_text
    for module in detail["info"]["fingerprint"]["modules"]:
        module["module"] = f"{module['module']}{hostile_text}"
    detail["info"]["target_modules"] = [hostile_text]
    page["items"][0]["base_model"] = hostile_text
    page["items"][0]["target_modules"] = [hostile_text]
    answers, url = hostile
    answers.answers["/v1/adapters/default/role/versions/1.0.0"] = detail
    answers.answers["/v1/adapters"] = page
    for args in (("show", "role@1.0.0"), ("search",)):
        done = _stance(url, tmp_path / "home", *args)
        assert done.returncode == 0, done.stderr
        assert (
            "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
        )
        assert MARKUP in done.stdout or "[bold" in done.stdout, done.stdout  # shown, not obeyed
