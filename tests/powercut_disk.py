"""A disk that forgets: the folder tree a power cut would leave, for the power-cut tests (issue 16).

SIGKILL keeps the page cache, so the kill tests only show what survives a process crash. Here a
schedule of writes runs in this process under :func:`shim`, which watches every way edgerec and
SQLite make data durable and records, at each *event*, a :class:`Cut`: what the disk would hold
if the power went at that moment. By default a cut keeps

- of a file, the bytes it had at its last fsync (never fsynced: empty);
- of a folder, the entries (names and the inodes they point to) it had at its last fsync:
  creations, renames and unlinks since then are lost (POSIX promises no more). Unlinked files
  and removed trees are parked outside the tree, never deleted, so inode numbers are not reused.

The events, named by their first word in the counts:

- ``start``: the tree as it was before the schedule (all of it durable);
- ``fsync <name>``: right after edgerec's ``os.fsync`` of a file or folder;
- ``commit``: right after an SQLite ``COMMIT`` returned;
- ``sqlite-sync <name>``: right after SQLite fsynced one of its files;
- ``journal <op> <name>``: right after a rename, mkdir, unlink, tree removal or SQLite delete,
  with *every* metadata change so far on disk (a journalling file system commits them in order)
  but file data still only as of each file's last fsync;
- ``torn <where>`` and ``sectors <where>``: just before each SQLite fsync and right after each
  commit, with *part* of SQLite's writes since its last fsync of each file on disk: ``torn``
  keeps them in order up to a random byte of a random write (the last N bytes written are
  dropped), ``sectors`` a random subset of the 512-byte sectors they wrote (the page cache
  reached the disk in any order) and, for a truncate, either length.

SQLite's own writes go through its VFS, in C, out of Python's sight, so :func:`shim` registers
a VFS of its own as the default (through ctypes, in the libsqlite3 the ``sqlite3`` module uses):
it hands every call to the ``unix`` VFS and records each write, truncate, fsync and delete of a
file inside the tree. It models what the ``unix`` VFS does besides: the first fsync of a journal
or WAL opened with ``SQLITE_OPEN_CREATE`` also fsyncs its folder, and so does a delete asked with
``syncDir``. The ``-shm`` file (memory-mapped, rebuilt from the WAL) is not modelled: a cut has
none.

Not modelled: a lying or reordering device (fsync that returns before the data is stable), a
write torn *inside* a 512-byte sector, bit rot, or a file system that loses fsynced data.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import shutil
import sqlite3
import stat
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

CHUNK = 4096  # file content is held as tuples of 4 KiB chunks, shared between cuts
SECTOR = 512
Content = tuple[bytes, ...]
Op = tuple[int, Optional[bytes]]  # (offset, data) for a write, (size, None) for a truncate
_REAL_RENAME = os.rename  # parking a file must not count as the schedule's own rename


def _chunks(data: bytes, old: Content = ()) -> Content:
    """``data`` as 4 KiB chunks, reusing the chunks of ``old`` that are equal (so the cuts of a
    4 MB WAL that changes a page at a time share all but that page)."""
    out = []
    for j, i in enumerate(range(0, len(data), CHUNK)):
        piece = data[i:i + CHUNK]
        out.append(old[j] if j < len(old) and old[j] == piece else piece)
    return tuple(out)


def _apply(buf: bytearray, op: Op) -> None:
    offset, data = op
    if data is None:  # truncate (or extend) to ``offset`` bytes
        del buf[offset:]
        buf.extend(bytes(offset - len(buf)))
        return
    buf.extend(bytes(max(0, offset - len(buf))))
    buf[offset:offset + len(data)] = data


@dataclass(frozen=True)
class Partial:
    """SQLite's writes to one file since its last fsync, ``ops`` in order, of which a cut keeps
    part: ``mode`` ``"torn"`` or ``"sectors"`` (see the module docstring)."""

    ops: tuple[Op, ...]
    mode: str
    seed: int

    def apply(self, durable: bytes) -> bytes:
        rng = random.Random(self.seed)
        buf = bytearray(durable)
        if self.mode == "torn":
            k = rng.randrange(len(self.ops))
            for op in self.ops[:k]:
                _apply(buf, op)
            offset, data = self.ops[k]
            if data is not None:
                _apply(buf, (offset, data[:rng.randrange(len(data))]))
            return bytes(buf)
        final = bytearray(durable)
        for op in self.ops:
            _apply(final, op)
        sectors = sorted({s for offset, data in self.ops if data
                          for s in range(offset // SECTOR, (offset + len(data) - 1) // SECTOR + 1)})
        for s in sectors:
            piece = final[s * SECTOR:(s + 1) * SECTOR]
            if piece and rng.random() < 0.5:
                _apply(buf, (s * SECTOR, bytes(piece)))
        if any(data is None for _, data in self.ops) and rng.random() < 0.5:
            _apply(buf, (len(final), None))
        return bytes(buf)


@dataclass
class Cut:
    """What a power cut right after one event leaves: ``folders[dir inode] = {name: inode}``,
    ``contents[inode]`` (durable bytes as chunks), ``partial[inode]`` (SQLite writes of which
    part reached the disk). ``returned``: steps of the schedule that had returned;
    ``commits``: how many SQLite ``COMMIT`` statements had returned; ``durable_commits``: how
    many had returned before SQLite's last fsync (all durable then)."""

    event: str
    returned: int
    commits: int
    durable_commits: int
    folders: dict[int, dict[str, int]]
    contents: dict[int, Content]
    partial: dict[int, Partial] = field(default_factory=dict)


class Disk:
    """The durable state of the tree at ``root`` as the shim sees it, and the cuts so far."""

    def __init__(self, root: Path, graveyard: Path, *, seed: int = 0) -> None:
        self.root = root.resolve()
        self.graveyard = graveyard
        self.root_inode = os.stat(self.root).st_ino
        self.folders: dict[int, dict[str, int]] = {}
        self.dirs: set[int] = {self.root_inode}
        self.contents: dict[int, Content] = {}
        self.pending: dict[int, list[Op]] = defaultdict(list)
        self.returned = 0
        self.commits = 0
        self.durable_commits = 0
        self.cuts: list[Cut] = []
        self.errors: list[BaseException] = []
        self.rng = random.Random(seed)

    # ---------------------------------------------------------------- what is on disk now

    def inside(self, path: Any) -> bool:
        return Path(os.fsdecode(path)).resolve().is_relative_to(self.root)

    def listing(self, folder: Path) -> dict[str, int]:
        entries = {}
        for entry in os.scandir(folder):
            entries[entry.name] = entry.inode()
            if entry.is_dir(follow_symlinks=False):
                self.dirs.add(entry.inode())
        return entries

    def walk(self) -> dict[int, dict[str, int]]:
        """Every folder of the tree as it is now."""
        folders, todo = {}, [self.root]
        while todo:
            folder = todo.pop()
            folders[os.stat(folder).st_ino] = entries = self.listing(folder)
            todo += [folder / name for name, ino in entries.items() if ino in self.dirs]
        return folders

    def baseline(self) -> None:
        """Everything in the tree before the schedule is durable."""
        self.folders = self.walk()
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = Path(folder, name)
                self.contents[path.stat().st_ino] = _chunks(path.read_bytes())
        self.record("start")

    # -------------------------------------------------------------------- durability events

    def synced_file(self, path: Path, ino: int) -> None:
        self.contents[ino] = _chunks(path.read_bytes(), self.contents.get(ino, ()))
        self.pending.pop(ino, None)

    def synced_folder(self, folder: Path) -> None:
        self.folders[os.stat(folder).st_ino] = self.listing(folder)

    def park(self, path: Any) -> None:
        """Move ``path`` (a file or a tree) out of the tree instead of deleting it."""
        _REAL_RENAME(path, self.graveyard / uuid.uuid4().hex)

    def committed(self) -> None:
        self.commits += 1
        self.record("commit")
        self.record_partial("commit")

    def record(self, event: str, folders: Optional[dict[int, dict[str, int]]] = None,
               partial: Optional[dict[int, Partial]] = None) -> None:
        folders = {k: dict(v) for k, v in (folders or self.folders).items()}
        used = {ino for entries in folders.values() for ino in entries.values()}
        self.cuts.append(Cut(event, self.returned, self.commits, self.durable_commits, folders,
                             {i: c for i, c in self.contents.items() if i in used},
                             dict(partial or {})))

    def record_partial(self, where: str) -> None:
        """Two cuts with part of SQLite's unsynced writes on disk (if there are any)."""
        pending = {ino: tuple(ops) for ino, ops in self.pending.items() if ops}
        if not pending:
            return
        for mode in ("torn", "sectors"):
            self.record(f"{mode} {where}", partial={
                ino: Partial(ops, mode, self.rng.getrandbits(32)) for ino, ops in pending.items()})

    def journal(self, op: str, name: str) -> None:
        self.record(f"journal {op} {name}", folders=self.walk())


def materialize(cut: Cut, disk: Disk, out: Path) -> None:
    """Build at ``out`` the tree that a power cut at ``cut`` leaves of ``disk.root``."""

    def build(ino: int, target: Path) -> None:
        target.mkdir()
        for name, child in cut.folders.get(ino, {}).items():  # a folder never fsynced: empty
            if name.endswith("-shm"):
                continue
            if child in disk.dirs:
                build(child, target / name)
                continue
            data = b"".join(cut.contents.get(child, ()))
            if child in cut.partial:
                data = cut.partial[child].apply(data)
            (target / name).write_bytes(data)

    build(disk.root_inode, out)


def count(cuts: list[Cut]) -> tuple[dict[str, int], dict[str, int]]:
    """``(cuts by event kind, torn and sectors cuts by where they fall)``: before an fsync of
    the WAL (inside a commit), of the database file (inside a checkpoint), of a rollback
    journal, or after a commit."""
    kinds: dict[str, int] = defaultdict(int)
    inside: dict[str, int] = defaultdict(int)
    for cut in cuts:
        kind, *where = cut.event.split()
        kinds[kind] += 1
        if kind in ("torn", "sectors"):
            name = where[-1]
            inside["after commit" if name == "commit" else "WAL fsync" if name.endswith("-wal")
                   else "journal fsync" if name.endswith("-journal")
                   else "database fsync"] += 1
    return dict(kinds), dict(inside)


def sample(cuts: list[Cut], n: Optional[int], seed: int) -> list[Cut]:
    """``n`` random cuts in event order (all with ``n`` None)."""
    if n is None or n >= len(cuts):
        return cuts
    keep = sorted(random.Random(seed).sample(range(len(cuts)), n))
    return [cuts[i] for i in keep]


# ------------------------------------------------------------------------------ the shim


class Connection(sqlite3.Connection):
    """Records a cut after every ``COMMIT``. ``rewrites``: SQL to run instead of other SQL,
    the tests' way to plant a bug (``{"PRAGMA synchronous=FULL": "PRAGMA synchronous=OFF"}``)."""

    disk: ClassVar[Optional[Disk]] = None
    rewrites: ClassVar[dict[str, str]] = {}  # set by tests through monkeypatch

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        sql = self.rewrites.get(sql, sql)
        cursor = super().execute(sql, *args)
        if self.disk is not None and sql.strip().upper() == "COMMIT":
            self.disk.committed()
        return cursor


@contextmanager
def shim(disk: Disk, *, sqlite: bool = True) -> Iterator[None]:
    """Patch ``os.fsync``, ``os.unlink``, ``os.replace``, ``os.rename``, ``os.mkdir``,
    ``shutil.rmtree`` and ``sqlite3.connect``, and (``sqlite``) make the recording VFS SQLite's
    default, while the schedule runs. Raises the first error the VFS met."""
    real_fsync, real_unlink, real_replace = os.fsync, os.unlink, os.replace
    real_rename, real_mkdir, real_rmtree = os.rename, os.mkdir, shutil.rmtree
    real_connect = sqlite3.connect

    def fsync(fd: int) -> None:
        real_fsync(fd)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not disk.inside(path):
            return
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            disk.synced_folder(path)
        else:
            disk.synced_file(path, os.fstat(fd).st_ino)
        disk.record(f"fsync {path.name}")

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs or not disk.inside(path):
            return real_unlink(path, *args, **kwargs)
        os.lstat(path)  # FileNotFoundError as unlink would
        disk.park(path)
        disk.journal("unlink", Path(os.fsdecode(path)).name)

    def moved(real: Any, op: str) -> Any:
        def move(src: Any, dst: Any, **kwargs: Any) -> None:
            real(src, dst, **kwargs)
            if not kwargs and disk.inside(dst):
                disk.journal(op, Path(os.fsdecode(dst)).name)
        return move

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        real_mkdir(path, *args, **kwargs)
        if not kwargs and disk.inside(path):
            disk.journal("mkdir", Path(os.fsdecode(path)).name)

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if not disk.inside(path) or kwargs.get("dir_fd") is not None:
            return real_rmtree(path, *args, **kwargs)
        if not os.path.lexists(path):
            if kwargs.get("ignore_errors", args[0] if args else False):
                return None
            raise FileNotFoundError(path)
        disk.park(path)
        disk.journal("rmtree", Path(os.fsdecode(path)).name)
        return None

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", Connection)
        return real_connect(*args, **kwargs)

    vfs = _RecordingVfs(disk) if sqlite else None
    Connection.disk = disk
    os.fsync, os.unlink, os.mkdir, shutil.rmtree = fsync, unlink, mkdir, rmtree
    os.replace, os.rename = moved(real_replace, "rename"), moved(real_rename, "rename")
    sqlite3.connect = connect
    try:
        yield
    finally:
        gc.collect()  # connections nobody closed close now, while the VFS still records
        os.fsync, os.unlink, os.mkdir, shutil.rmtree = (real_fsync, real_unlink, real_mkdir,
                                                        real_rmtree)
        os.replace, os.rename, sqlite3.connect = real_replace, real_rename, real_connect
        Connection.disk = None
        if vfs is not None:
            vfs.unregister()
    if disk.errors:
        raise disk.errors[0]


# ---------------------------------------------------------------- SQLite's VFS through ctypes

_P = ctypes.c_void_p
_XOPEN = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, _P, ctypes.c_int, _P)
_XDELETE = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, ctypes.c_int)
_XCLOSE = ctypes.CFUNCTYPE(ctypes.c_int, _P)
_XWRITE = ctypes.CFUNCTYPE(ctypes.c_int, _P, _P, ctypes.c_int, ctypes.c_int64)
_XTRUNCATE = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.c_int64)
_XSYNC = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.c_int)
SQLITE_IOERR = 10
SQLITE_IOERR_DELETE_NOENT = 10 | (23 << 8)
SQLITE_OPEN_CREATE = 0x4
SQLITE_OPEN_JOURNALS = 0x800 | 0x4000 | 0x80000  # main journal, super journal, WAL


class _IoMethods(ctypes.Structure):  # sqlite3_io_methods, version 3
    _fields_ = [("iVersion", ctypes.c_int), ("xClose", _XCLOSE), ("xRead", _P),
                ("xWrite", _XWRITE), ("xTruncate", _XTRUNCATE), ("xSync", _XSYNC),
                *((name, _P) for name in (
                    "xFileSize", "xLock", "xUnlock", "xCheckReservedLock", "xFileControl",
                    "xSectorSize", "xDeviceCharacteristics", "xShmMap", "xShmLock",
                    "xShmBarrier", "xShmUnmap", "xFetch", "xUnfetch"))]


class _Vfs(ctypes.Structure):  # sqlite3_vfs, version 3
    _fields_ = [("iVersion", ctypes.c_int), ("szOsFile", ctypes.c_int),
                ("mxPathname", ctypes.c_int), ("pNext", _P), ("zName", ctypes.c_char_p),
                ("pAppData", _P), ("xOpen", _XOPEN), ("xDelete", _XDELETE),
                *((name, _P) for name in (
                    "xAccess", "xFullPathname", "xDlOpen", "xDlError", "xDlSym", "xDlClose",
                    "xRandomness", "xSleep", "xCurrentTime", "xGetLastError",
                    "xCurrentTimeInt64", "xSetSystemCall", "xGetSystemCall",
                    "xNextSystemCall"))]


def _libsqlite3() -> ctypes.CDLL:
    """The SQLite library the ``sqlite3`` module runs on (a VFS registered in another copy
    would never see its files)."""
    import _sqlite3

    candidates = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libsqlite3" in path and path not in candidates:
                candidates.append(path)
    for path in [*candidates, _sqlite3.__file__]:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if not hasattr(lib, "sqlite3_vfs_register"):
            continue
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        if lib.sqlite3_libversion().decode() == sqlite3.sqlite_version:
            return lib
    raise RuntimeError("cannot reach the SQLite library of the sqlite3 module through ctypes "
                       "(the power-cut shim needs a shared libsqlite3 on Linux)")


def sqlite_reachable() -> bool:
    """Whether :func:`shim` can record SQLite's writes here."""
    try:
        _libsqlite3()
    except (RuntimeError, OSError):  # no /proc/self/maps, no shared library
        return False
    return True


_KEEP: list[Any] = []  # structs and callbacks SQLite may still call: never freed


@dataclass
class _Open:
    path: Path
    inode: int
    dirsync: bool  # the unix VFS fsyncs the folder at this handle's first fsync


class _RecordingVfs:
    """The ``unix`` VFS with each write, truncate, fsync and delete inside ``disk.root``
    recorded; registered as SQLite's default until :meth:`unregister`."""

    NAME = b"edgerec-powercut"

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.active = True
        self.lib = lib = _libsqlite3()
        lib.sqlite3_vfs_find.restype = _P
        lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
        lib.sqlite3_vfs_register.argtypes = [_P, ctypes.c_int]
        lib.sqlite3_vfs_unregister.argtypes = [_P]
        self.unix_address = lib.sqlite3_vfs_find(b"unix")
        self.unix = _Vfs.from_address(self.unix_address)
        self.vfs = _Vfs()
        ctypes.memmove(ctypes.byref(self.vfs), self.unix_address, ctypes.sizeof(_Vfs))
        self.vfs.zName, self.vfs.pNext = self.NAME, None
        self.vfs.xOpen = _XOPEN(self._guard(self._open))
        self.vfs.xDelete = _XDELETE(self._guard(self._delete))
        self.files: dict[int, _Open] = {}
        self.methods: dict[int, _IoMethods] = {}
        _KEEP.append(self)
        if lib.sqlite3_vfs_register(ctypes.byref(self.vfs), 1) != 0:
            raise RuntimeError("sqlite3_vfs_register failed")

    def unregister(self) -> None:
        self.active = False
        self.lib.sqlite3_vfs_unregister(ctypes.byref(self.vfs))

    def _guard(self, fn: Any) -> Any:
        """An exception in a callback must not become SQLITE_OK: record it, fail the call."""
        def call(*args: Any) -> int:
            try:
                return fn(*args)
            except BaseException as exc:
                self.disk.errors.append(exc)
                return SQLITE_IOERR
        return call

    def _open(self, vfs: int, name: Optional[int], file: int, flags: int, out: int) -> int:
        rc = self.unix.xOpen(self.unix_address, name, file, flags, out)
        if rc != 0 or not name or not self.active:
            return rc
        path = Path(ctypes.string_at(name).decode())
        methods = _P.from_address(file).value
        if not methods or not self.disk.inside(path):
            return rc
        _P.from_address(file).value = ctypes.addressof(self._wrap(methods))
        self.files[file] = _Open(path, os.stat(path).st_ino, bool(
            flags & SQLITE_OPEN_CREATE and flags & SQLITE_OPEN_JOURNALS))
        return rc

    def _delete(self, vfs: int, name: int, sync_dir: int) -> int:
        path = Path(ctypes.string_at(name).decode())
        if not self.active or not self.disk.inside(path):
            return self.unix.xDelete(self.unix_address, name, sync_dir)
        if not path.exists():
            return SQLITE_IOERR_DELETE_NOENT
        self.disk.park(path)
        if sync_dir:
            self.disk.synced_folder(path.parent)
        self.disk.journal("delete", path.name)
        return 0

    def _wrap(self, address: int) -> _IoMethods:
        if address in self.methods:
            return self.methods[address]
        real = _IoMethods.from_address(address)
        close, write, truncate, sync = real.xClose, real.xWrite, real.xTruncate, real.xSync
        ours = _IoMethods()
        ctypes.memmove(ctypes.byref(ours), address, ctypes.sizeof(_IoMethods))

        def x_close(file: int) -> int:
            self.files.pop(file, None)
            return close(file)

        def x_write(file: int, buf: int, amount: int, offset: int) -> int:
            if self.active and file in self.files:
                self.disk.pending[self.files[file].inode].append(
                    (offset, ctypes.string_at(buf, amount)))
            return write(file, buf, amount, offset)

        def x_truncate(file: int, size: int) -> int:
            if self.active and file in self.files:
                self.disk.pending[self.files[file].inode].append((size, None))
            return truncate(file, size)

        def x_sync(file: int, flags: int) -> int:
            opened = self.files.get(file) if self.active else None
            if opened is None:
                return sync(file, flags)
            self.disk.record_partial(f"before-sync {opened.path.name}")
            rc = sync(file, flags)
            if rc == 0:
                self.disk.synced_file(opened.path, opened.inode)
                if opened.dirsync:
                    self.disk.synced_folder(opened.path.parent)
                    opened.dirsync = False
                self.disk.durable_commits = self.disk.commits
                self.disk.record(f"sqlite-sync {opened.path.name}")
            return rc

        ours.xClose = _XCLOSE(self._guard(x_close))
        ours.xWrite = _XWRITE(self._guard(x_write))
        ours.xTruncate = _XTRUNCATE(self._guard(x_truncate))
        ours.xSync = _XSYNC(self._guard(x_sync))
        self.methods[address] = ours
        return ours

