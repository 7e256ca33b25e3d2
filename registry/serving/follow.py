"""Following specs for a running vLLM: when what a spec selects moves, vLLM drops the old one.

vLLM keeps a resolved adapter under the name a client asked for (``curious-uncertainty@prod``)
and never asks the resolver again. The follower polls each spec with conditional requests,
fetches and verifies a new version into the cache first (a version that fails is never
offered), then, where vLLM holds another version under that name, unloads it and loads the new
folder through vLLM's runtime LoRA endpoints (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from registry.errors import InvalidAdapter, RegistryError
from registry.interfaces import AdapterRegistry
from registry.schemas import Resolution
from registry.transfer.cache import Cache
from registry.transfer.http import transport_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """What one poll did for one spec."""

    name: str  # the spec, as clients send it in "model"
    version: str  # namespace/name@version it selects now
    previous: str | None  # the folder vLLM held under the name (None: it held nothing)
    # "reloaded"; "unloaded" (the resolver plugin loads it on the next request); "refused" (not
    # offered: failed verification, another base model, or vLLM said no)
    action: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class VllmEndpoints:
    """The few vLLM HTTP calls a follower needs: what is loaded, unload, load."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        with transport_errors(f"cannot reach vLLM at {self.url}"):
            return self.http.request(method, path, json=body)

    def models(self) -> tuple[set[str], dict[str, str]]:
        """The base model's names and paths, and each LoRA adapter held: name -> its folder."""
        response = self._send("GET", "/v1/models")
        _raise_for(response, "list its models")
        bases, adapters = set(), {}
        for card in response.json().get("data", []):
            if card.get("parent"):  # an adapter: its parent is the base model
                adapters[card["id"]] = card.get("root") or ""
            else:
                bases |= {card["id"], card.get("root") or card["id"]}
        return bases, adapters

    def unload(self, name: str) -> bool:
        """Drop ``name``; False when vLLM held no such adapter (404)."""
        response = self._send("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code == 404:
            return False
        _raise_for(response, f"unload {name!r}")
        return True

    def load(self, name: str, folder: Path) -> bool:
        """Load ``folder`` as ``name``; False when vLLM already holds the name again (a request
        resolved it between the unload and this load, which is the same new version)."""
        body = {"lora_name": name, "lora_path": str(folder)}
        response = self._send("POST", "/v1/load_lora_adapter", body)
        if response.status_code == 400 and "already been loaded" in response.text:
            return False
        _raise_for(response, f"load {name!r} from {folder}")
        return True


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    raise RegistryError(f"vLLM refused to {what}: HTTP {response.status_code}: {message}")


def same_version(root: str, folder: Path) -> bool:
    """Whether vLLM's folder is this version: the cache's ``versions/<ns>/<name>/<version>``
    and ``stance export --copy``'s ``<ns>/<name>/<version>`` end alike wherever mounted."""
    return Path(root).parts[-3:] == folder.parts[-3:]


class VllmFollower:
    """Keeps the adapters a vLLM serves by spec on what those specs select now."""

    def __init__(
        self,
        registry: AdapterRegistry,
        engine: VllmEndpoints,
        specs: list[str],
        *,
        load: bool = True,
        base_model: str | None = None,
    ) -> None:
        self.registry, self.engine, self.specs, self.load = registry, engine, specs, load
        self.base_model = base_model  # the id adapters must name, when vLLM serves a local path
        self._etags: dict[str, str | None] = {}

    def check(self) -> list[Move]:
        """One round over every spec; what changed, refusals and failures included."""
        moves: list[Move] = []
        state: tuple[set[str], dict[str, str]] | None = None
        for name in self.specs:
            found, etag = self.registry.poll(name, self._etags.get(name))
            if found is None:
                continue  # unchanged since the last round, which settled it
            state = state or self.engine.models()
            bases, adapters = state
            previous = adapters.get(name)
            try:
                self._check_base(found, bases)
                folder = self._verified(found)
                if previous is not None and not same_version(previous, folder):
                    moves.append(self._swap(name, found, previous, folder))
            except RegistryError as exc:
                self._etags[name] = None  # ask in full next time: never trust a 304 for it
                log.warning("not following %s to %s: %s", name, found.spec, exc.message)
                moves.append(Move(name, found.spec, previous, "refused", exc.message))
                continue
            self._etags[name] = etag
        return moves

    def _check_base(self, found: Resolution, bases: set[str]) -> None:
        expected = {self.base_model} if self.base_model else bases
        if found.base_model not in expected:
            raise InvalidAdapter(
                f"{found.spec} was trained on {found.base_model!r}, but vLLM serves "
                f"{' / '.join(sorted(expected))}"
            )

    def _verified(self, found: Resolution) -> Path:
        """The version's folder, every blob checked (a fresh Cache re-hashes what it holds)."""
        cache = Cache(self.registry.cache.root)
        return cache.version(found, self.registry.open_blob, resume=self.registry.open_blob)

    def _swap(self, name: str, found: Resolution, previous: str, folder: Path) -> Move:
        self.engine.unload(name)
        if self.load:
            self.engine.load(name, folder)
            return Move(name, found.spec, previous, "reloaded")
        return Move(name, found.spec, previous, "unloaded")

    def run(
        self,
        *,
        interval: float,
        rounds: int | None = None,
        stop: threading.Event | None = None,
        report: Callable[[Move], None] | None = None,
    ) -> list[Move]:
        """Poll every ``interval`` seconds (``rounds`` times, or until ``stop``), handing each
        move to ``report`` as it happens; a round that fails (registry or vLLM down) is logged
        and tried again next time."""
        stop = stop or threading.Event()
        done, moves = 0, []
        while rounds is None or done < rounds:
            try:
                found = self.check()
            except RegistryError as exc:
                log.warning("following %s: %s", ", ".join(self.specs), exc.message)
                found = []
            for move in found:
                if report is not None:
                    report(move)
            moves += found
            done += 1
            if (rounds is not None and done >= rounds) or stop.wait(interval):
                break
        return moves
