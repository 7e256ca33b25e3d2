"""Following an alias: a watcher thread that brings each new version to the serving thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from registry.errors import RegistryError
from registry.schemas import Resolution

log = logging.getLogger(__name__)
Poll = Callable[[str, str | None], tuple[Resolution | None, str | None]]


class Follower:
    """Polls ``spec``; fetches and verifies a moved version off the serving thread, then hands
    it over (the RoleSet swaps it in between forward passes). Stop it with ``stop()``."""

    def __init__(
        self,
        spec: str,
        role: str,
        *,
        poll: Poll,
        prepare: Callable[[Resolution], Path],
        deliver: Callable[[Resolution, Path], None],
        digest: str,
        interval: float,
    ) -> None:
        self.spec, self.role, self.interval = spec, role, interval
        self._poll, self._prepare, self._deliver = poll, prepare, deliver
        self.digest = digest  # what the role runs (or will, once delivered)
        self.delivered = threading.Event()  # set each time a new version is handed over
        self.failed = threading.Event()  # set each time a new version could not be used
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow {spec}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Follower({self.spec!r} -> role {self.role!r}, {self.digest[:19]})"

    def check(self, etag: str | None = None) -> str | None:
        """One poll: hand over a moved version; return the ETag to send next time."""
        found, etag = self._poll(self.spec, etag)
        if found is None or found.digest == self.digest:
            return etag
        try:
            folder = self._prepare(found)  # download and verify, here, not in a forward pass
        except RegistryError as exc:
            self.last_error = f"{found.spec}: {exc.message}"
            log.warning("not following %s to %s: %s", self.spec, found.spec, exc.message)
            self.failed.set()
            return None  # ask again next time rather than trust a 304 for a version we lack
        self.digest = found.digest
        self._deliver(found, folder)
        self.delivered.set()
        return etag

    def _run(self) -> None:
        etag: str | None = None
        while not self._stop.wait(self.interval):
            try:
                etag = self.check(etag)
            except RegistryError as exc:  # registry down or refusing: keep serving, retry later
                self.last_error = exc.message
                log.warning("following %s: %s", self.spec, exc.message)
            except Exception:  # a watcher must outlive surprises; the old version keeps serving
                log.exception("following %s", self.spec)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(1.0, 2 * self.interval))
