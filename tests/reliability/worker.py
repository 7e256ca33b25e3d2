"""Publisher processes for the reliability tests, forked from one warm process.

``python -m tests.reliability.worker`` imports the registry once (a second of CPU), answers
``{"ready": true}``, then takes one JSON command per line on stdin and answers one JSON line:

- ``{"op": "race", "commands": [...]}``: fork one child per command; each opens the registry
  (a connection of its own), says it is armed, and waits until every child is; then all are
  released together and each runs its ``publish`` or ``alias`` command. The answer lists each
  outcome in order: ``{"created", "digest"}`` / ``{"version"}``, ``{"error": code, "message"}``
  for a domain error, or ``{"exception": type, "message"}`` for anything else (a test fails on
  it; a child that died without a word reads ``{"exception": "died"}``).
- ``{"op": "warm", "settings", "folder"}``: publish once on a scratch catalog first, so that
  every child starts with the ORM configured and the lazy imports done (half its CPU).
- ``{"op": "killed_publish", ..., "delay": s}``: fork a child that opens the registry, says so,
  and publishes; ``delay`` seconds later it is SIGKILLed (``null``: never, and the answer
  carries how long the publish took).

Forking a warm, single-threaded process costs milliseconds, where sixteen interpreters would
cost sixteen seconds of CPU; the children are real processes with their own connections.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from registry.embedded import EmbeddedRegistry
from registry.errors import RegistryError
from registry.settings import Settings


def _registry(command: dict[str, Any]) -> EmbeddedRegistry:
    return EmbeddedRegistry(Settings(**command["settings"]), actor=command.get("actor", "worker"))


def _act(registry: EmbeddedRegistry, command: dict[str, Any]) -> dict[str, Any]:
    if command["op"] == "publish":
        done = registry.publish(Path(command["folder"]), command["target"])
        return {"created": done.created, "digest": done.digest}
    moved = registry.set_alias(command["ref"], command["alias"], command["version"])
    return {"version": moved.version}


def _warm(command: dict[str, Any]) -> dict[str, Any]:
    """Publish and move an alias once on a scratch catalog, so that the children start with
    the ORM configured and every lazy import done (the first publish of a process costs a few
    times the next one)."""
    with _registry(command) as registry:
        registry.publish(Path(command["folder"]), "warm@1.0.0", alias="prod")
        registry.verify_store()
    return {"warm": True}


def _contender(command: dict[str, Any], armed: int, go: int) -> dict[str, Any]:
    try:
        with _registry(command) as registry:
            os.write(armed, b"a")
            os.read(go, 1)
            return _act(registry, command)
    except RegistryError as exc:
        return {"error": exc.code, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {"exception": type(exc).__name__, "message": str(exc)}


def _fork(run: Any) -> tuple[int, int]:
    """A child running ``run(write_fd)`` and exiting; its pid and the read end of its pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 0
        try:
            run(write)
        except BaseException:  # noqa: BLE001 - the exit status says it failed
            status = 3
        os._exit(status)
    os.close(write)
    return pid, read


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _race(commands: list[dict[str, Any]]) -> dict[str, Any]:
    go_read, go_write = os.pipe()
    children = []
    for command in commands:
        armed_read, armed_write = os.pipe()

        def run(out: int, command: dict[str, Any] = command, armed: int = armed_write) -> None:
            os.close(go_write)
            os.write(out, json.dumps(_contender(command, armed, go_read)).encode())

        pid, out = _fork(run)
        os.close(armed_write)
        children.append((pid, armed_read, out))
    for _, armed_read, _ in children:
        os.read(armed_read, 1)  # empty if the child died before arming: it answers "died"
        os.close(armed_read)
    os.write(go_write, b"g" * len(children))
    os.close(go_write)
    os.close(go_read)
    results = []
    for pid, _, out in children:
        answer = _drain(out)
        os.waitpid(pid, 0)
        results.append(json.loads(answer) if answer else {"exception": "died", "message": ""})
    return {"results": results}


def _killed_publish(command: dict[str, Any]) -> dict[str, Any]:
    def run(ready: int) -> None:
        with _registry(command) as registry:
            os.write(ready, b"r")
            registry.publish(Path(command["folder"]), command["target"])

    pid, ready = _fork(run)
    opened = os.read(ready, 1) == b"r"
    os.close(ready)
    began = time.monotonic()
    if command["delay"] is None:
        _, status = os.waitpid(pid, 0)
        return {"seconds": time.monotonic() - began, "status": os.waitstatus_to_exitcode(status)}
    time.sleep(command["delay"])  # the fault injection itself: where in the publish it lands
    finished, status = os.waitpid(pid, os.WNOHANG)
    if finished == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"killed": True, "opened": opened}
    return {"killed": False, "opened": opened, "status": os.waitstatus_to_exitcode(status)}


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    _say({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "race":
            _say(_race(command["commands"]))
        elif command["op"] == "warm":
            _say(_warm(command))
        else:
            _say(_killed_publish(command))


if __name__ == "__main__":
    main()
