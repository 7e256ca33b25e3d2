"""The loader's tests: one SQLite catalog per module, and torch on one thread for tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from registry.embedded import EmbeddedRegistry
from registry.settings import Settings


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRegistry]:
    """A real registry to publish into (these tests exercise the loader, not the catalog)."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'catalog.db'}", store=(home / "b").as_uri()
    )
    with EmbeddedRegistry(settings, actor="test") as registry:
        yield registry


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Half-precision matmuls of 32-wide models on shared cores: each op's OpenMP barrier costs
    milliseconds (measured: a bf16 linear 3.5 ms on 2 threads, 0.17 ms on 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
