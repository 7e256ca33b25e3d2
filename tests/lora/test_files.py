"""``lora/files.py``: regular files only, capped in bytes read; digests of what was validated."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from registry.errors import InvalidAdapter
from registry.lora import inspection as inspection_module
from registry.lora.files import open_regular, read_capped
from registry.lora.inspection import inspect_dir
from registry.manifest import manifest_of


def test_read_capped_counts_bytes_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_capped(path, 10) == b"x" * 10
    with pytest.raises(InvalidAdapter, match="larger than 9 bytes"):
        read_capped(path, 9)


@pytest.mark.parametrize("target", ["/proc/self/status", "/proc/self/environ", "/sys/kernel/mm"])
def test_pseudo_files_are_refused_through_links(target: str, tmp_path: Path) -> None:
    """/proc reports st_size 0, so a cap on stat would let the environment through."""
    link = tmp_path / "README.md"
    link.symlink_to(target)
    with pytest.raises(InvalidAdapter, match="not an adapter file"):
        read_capped(link, 1024)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "README.md"
    os.mkfifo(fifo)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(InvalidAdapter, match="not a regular file"):
            open_regular(fifo)
        done.set()

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    assert done.wait(5.0), "opening a FIFO blocked"


def test_links_to_regular_files_are_followed(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"card")
    (tmp_path / "one").symlink_to("blob")
    (tmp_path / "two").symlink_to("one")
    with open_regular(tmp_path / "two") as fh:
        assert fh.read() == b"card"


def test_digests_are_of_the_bytes_validated(adapters: dict[str, Path]) -> None:
    result = inspect_dir(adapters["curious"])
    for name, (digest, size) in result.digests.items():
        data = (adapters["curious"] / name).read_bytes()
        assert (digest, size) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert result.manifest == manifest_of(result.files)


def test_weights_written_during_inspection_are_refused(
    adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    for f in adapters["curious"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    weights = folder / "adapter_model.safetensors"
    real = inspection_module.module_fingerprint

    def fingerprint_then_tamper(module: object) -> object:
        with weights.open("r+b") as fh:  # same length, other bytes: only ctime tells
            fh.seek(-4, os.SEEK_END)
            fh.write(b"\0\0\0\0")
        time.sleep(0.01)
        return real(module)  # type: ignore[arg-type]

    monkeypatch.setattr(inspection_module, "module_fingerprint", fingerprint_then_tamper)
    with pytest.raises(InvalidAdapter, match="changed while it was read"):
        inspect_dir(folder)
