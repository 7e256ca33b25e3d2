"""HTTP/1.1 spoken by hand over one TCP connection: the requests no client library sends.

A dribbled head, a body that never ends, a header of 64 MiB: ``exchange`` sends the head and
then the chunks (``pace`` seconds apart, the attacker's own rhythm) while a reader thread
collects the answer; sending stops as soon as an answer is complete or the server hangs up.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0  # from the first byte sent to the answer (or the close)
    sent: int = 0  # bytes of the request that made it into the socket

    def json(self) -> Any:
        return json.loads(self.body)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _parse(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def exchange(
    port: int,
    head: bytes,
    chunks: Iterable[bytes] = (),
    *,
    pace: float = 0.0,
    timeout: float = 60.0,
) -> Answer:
    """Send ``head`` then ``chunks`` on a fresh connection to 127.0.0.1:``port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = bytearray()
    answered = threading.Event()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
                if _complete(bytes(received)):
                    break
        except OSError:
            pass  # reset by the server: what it had sent is in ``received``
        answered.set()

    reader = threading.Thread(target=read, daemon=True)
    start, sent = time.monotonic(), 0
    try:
        reader.start()
        for data in itertools.chain([head], chunks):  # lazily: a flood is never held whole
            if answered.is_set():
                break
            try:
                sock.sendall(data)
            except OSError:
                break  # the server hung up on us
            sent += len(data)
            if pace:
                answered.wait(pace)
        answered.wait(timeout)
        seconds = time.monotonic() - start
    finally:
        sock.close()
        reader.join(timeout=10)
    status, headers, body = _parse(bytes(received))
    return Answer(status, headers, body, seconds, sent)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
