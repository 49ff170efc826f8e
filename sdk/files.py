"""Durable file writes and file hashes: the one place edgerec writes a file that must not be
seen half-written.

:func:`atomic_write` writes into a hidden temporary file beside the target, flushes and fsyncs
it, renames it over the target (``os.replace``: atomic on POSIX and Windows) and, unless told
the caller will do it once for many files, fsyncs the folder so the rename survives a power
cut. A crash or an exception at any point leaves the old file (or none), never a torn one, and
an exception removes the temporary file.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Union

__all__ = [
    "HashingWriter",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "copy_hashed",
    "fsync_dir",
    "sha256_file",
    "temporary_sibling",
]

PathLike = Union[str, os.PathLike]
CHUNK = 1 << 20


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: PathLike, *, strict: bool = True) -> None:
    """Make renames and unlinks inside the folder ``path`` durable. ``strict=False`` ignores a
    file system that cannot open or fsync folders (some network and Windows file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def temporary_sibling(path: PathLike, tag: str = "tmp") -> Path:
    """A hidden, unique name beside ``path``: ``.<name>.<tag>-<pid>-<random>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


class HashingWriter:
    """A write-only binary file object that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self._f.write(data)


@contextmanager
def atomic_write(path: PathLike, *, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears complete or not at all.

    ``sync_dir=False`` leaves the folder's fsync to the caller (one after many files).
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent, strict=False)


def atomic_write_bytes(path: PathLike, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, sync_dir=sync_dir) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, *, sync_dir: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"), sync_dir=sync_dir)


def copy_hashed(src: PathLike, dst: PathLike) -> str:
    """Copy ``src`` to the new file ``dst``, fsync it, and return the sha256 of the bytes
    written (the caller renames or fsyncs the folder that holds ``dst``)."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()
