"""Reliability fixtures: a pool of warm publisher processes and cheap variants of one adapter."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from registry.lora.format import WEIGHTS
from registry.settings import Settings
from tests.conftest import _truncate
from tests.factories import make_adapter

# The S3 server fixtures live with the store tests; verify --all runs on S3 too.
from tests.stores.conftest import aws_env, s3_bucket, s3_client, s3_endpoint, s3_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
POOL = 16
TIMEOUT_S = 120


class Workers:
    """The warm process of ``tests.reliability.worker`` that forks the publishers; killed on
    every path by the fixture."""

    def __init__(self, warm: Path, scratch: Path, pg_url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.worker"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group holds the children it forks: one kill ends all
        )
        try:
            assert self._ask(None) == {"ready": True}
            for url in (f"sqlite:///{scratch / 'catalog.db'}", pg_url):  # each test truncates
                where = {"home": str(scratch), "database_url": url}
                warmed = self._ask({"op": "warm", "settings": where, "folder": str(warm)})
                assert warmed == {"warm": True}
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the worker and every child it forked (its process group, by its id)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _ask(self, message: dict[str, Any] | None) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        if message is not None:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], TIMEOUT_S)[0]:
            self.kill()  # a child stuck on a lock must fail the test, not hang it
            raise TimeoutError(f"no answer from the worker within {TIMEOUT_S} s to {message}")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker process exited ({self.process.poll()})")
        return json.loads(line)

    def race(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One process per command, all released together once every one has its registry."""
        return self._ask({"op": "race", "commands": commands})["results"]

    def killed_publish(self, command: dict[str, Any]) -> dict[str, Any]:
        """A publish in a process of its own, SIGKILLed ``delay`` seconds after it began."""
        return self._ask({"op": "killed_publish", **command})

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process.stdout.close()


@pytest.fixture(scope="package")
def workers(tiny: Path, tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Workers]:
    pool = Workers(tiny, tmp_path_factory.mktemp("warm"), pg_url)
    try:
        _truncate(pg_url)  # the warm-up's rows are no test's
        yield pool
    finally:
        pool.close()


def worker_settings(settings: Settings) -> dict[str, Any]:
    """What a worker needs to open the test's registry (its environment is not the test's)."""
    return {
        "home": str(settings.home),
        "database_url": settings.catalog_url,
        "store": settings.store_url,
    }


@pytest.fixture(scope="package")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real PEFT adapter (tiny Llama, rank 8 on q/v); variants are derived from it."""
    return make_adapter(tmp_path_factory.mktemp("reliability") / "tiny", seed=7)


def with_card(source: Path, dest: Path, text: str) -> Path:
    """``source`` with a README of its own: other content, same weights (a cheap variant)."""
    shutil.copytree(source, dest)
    (dest / "README.md").write_text(text)
    return dest


def with_weights_scaled(source: Path, dest: Path, factor: float) -> Path:
    """``source`` with every LoRA tensor scaled: other weights, still a valid PEFT adapter."""
    shutil.copytree(source, dest)
    with safe_open(str(source / WEIGHTS), framework="numpy") as reader:
        tensors = {key: reader.get_tensor(key) * np.float32(factor) for key in reader.keys()}  # noqa: SIM118
        metadata = reader.metadata()
    save_file(tensors, str(dest / WEIGHTS), metadata=metadata)
    return dest
