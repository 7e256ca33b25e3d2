"""Opening an adapter's files without trusting them: regular files only, read up to a real cap.

An upload folder is the publisher's, not ours: ``README.md`` may be a symlink to
``/proc/self/environ`` (whose ``st_size`` is 0, so a size check on ``stat`` passes and the
publisher's environment is published), or to a FIFO or a device that blocks or never ends.
Every file of ``lora/`` is opened here: a symlink is followed (a Hugging Face cache snapshot is
symlinks into ``../../blobs``), then the descriptor actually opened is checked to be a regular
file outside ``/proc``, ``/sys`` and ``/dev``, and reads stop at the cap in bytes read, never at
what ``stat`` claims.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import BinaryIO

from registry.errors import InvalidAdapter
from registry.manifest import digest_stream

# Kernel pseudo file systems: their "regular" files are live process or device state.
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


@functools.cache
def _pseudo_devices() -> frozenset[int]:
    found = set()
    for root in _PSEUDO_ROOTS:
        try:
            found.add(os.stat(root).st_dev)
        except OSError:
            continue
    return frozenset(found)


def _under_pseudo_root(real: str) -> bool:
    return any(real == root or real.startswith(root + "/") for root in _PSEUDO_ROOTS)


def open_fd(path: Path) -> int:
    """A descriptor of ``path`` once it is known to be a regular file; the caller closes it."""
    real = os.path.realpath(path)
    if _under_pseudo_root(real):
        raise InvalidAdapter(f"{path.name} resolves to {real}, which is not an adapter file")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: the path was just
        # resolved, so a symlink here means it changed under us.
        fd = os.open(real, _FLAGS)
    except FileNotFoundError:
        raise InvalidAdapter(f"missing {path.name}") from None
    except OSError as exc:
        raise InvalidAdapter(f"{path.name} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_dev in _pseudo_devices():
            raise InvalidAdapter(f"{path.name} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading (binary), refused unless it is a regular file.

    Raises:
        InvalidAdapter: missing, a device, FIFO, socket or directory, or under /proc, /sys, /dev.
    """
    return os.fdopen(open_fd(path), "rb")


def read_capped(path: Path, cap: int) -> bytes:
    """All of ``path``'s bytes, refused past ``cap`` bytes actually read (``st_size`` can lie).

    Raises:
        InvalidAdapter: as ``open_regular``, or the file holds more than ``cap`` bytes.
    """
    with open_regular(path) as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise InvalidAdapter(f"{path.name} is larger than {cap} bytes")
    return data


def digest_regular(path: Path) -> tuple[str, int]:
    """``(sha256:<hex>, size)`` of ``path`` read through ``open_regular`` (``digest_file``'s twin
    for adapter files: ``registry/manifest.py`` is below ``lora/`` and cannot use this room)."""
    with open_regular(path) as fh:
        return digest_stream(fh)
