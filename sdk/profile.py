"""On-device user profiles: a per-user event log in a local SQLite file, and the user vector.

::

    with ProfileStore.open("profiles.sqlite") as store:
        store.record("alice", Event("sku-1", EventKind.PURCHASE))
        store.record("alice", [Event("sku-7", "view"), Event("sku-9", "dismiss")])
        profile = store.profile("alice")          # Profile(user_id, events oldest first)
        store.forget("alice")                     # every trace of alice is gone from the file

Nothing here talks to a network: the file is the whole profile. It is created readable by its
owner only (mode 0600), in WAL mode with ``secure_delete`` on, so :meth:`ProfileStore.forget`
overwrites the deleted rows with zeros, rebuilds the file (``VACUUM``) and then checkpoints and
truncates the WAL: afterwards
neither ``profiles.sqlite`` nor its ``-wal`` holds the user's id or items (tested on the bytes).

**The user vector** (:func:`user_vector`) is the weighted mean of the vectors of the history's
items, L2-normalised::

    w_i = event_weight(kind_i) * 0.5 ** (age_i / half_life_days)
    u   = normalise( sum_i w_i v_i / sum_{w_i > 0} w_i )

``age_i`` is measured from the *newest* event of the history, not from the wall clock: in a
normalised weighted mean, exponential decay only depends on the gaps between events (every
weight shifts by the same factor as time passes), so "now" cannot change a ranking and the
result is reproducible. Negative weights (``dismiss``, -1 by default) subtract the item's vector,
pushing look-alikes down; the recommender also never returns a dismissed item. The same function
is the contract for the scorer's training data (the export must compute ``u`` the same way).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Union

import numpy as np
from edgerec.sdk.bundle.manifest import UserVectorRecipe
from edgerec.sdk.errors import ProfileError

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "Event",
    "EventKind",
    "Profile",
    "ProfileStore",
    "user_vector",
]

PROFILE_FORMAT_VERSION = 1
_SECONDS_PER_DAY = 86400.0



class EventKind(str, Enum):
    """What a person did with an item."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    DISMISS = "dismiss"  # "not interested": pushes look-alikes down, never shown again

    @property
    def past_tense(self) -> str:
        """How a reason names the event: ``"looks like sku-1 you bought"``."""
        return _PAST[self]


_PAST = {
    EventKind.VIEW: "viewed",
    EventKind.CLICK: "clicked",
    EventKind.ADD_TO_CART: "added to your cart",
    EventKind.PURCHASE: "bought",
    EventKind.DISMISS: "dismissed",
}

DEFAULT_EVENT_WEIGHTS: Mapping[EventKind, float] = MappingProxyType(
    {EventKind(kind): w for kind, w in UserVectorRecipe().event_weights.items()})
"""The weight of each :class:`EventKind` in a user vector (the recipe's defaults:
:class:`~edgerec.sdk.bundle.manifest.UserVectorRecipe`)."""


def _event_kind(kind: Any) -> EventKind:
    try:
        return EventKind(kind)
    except ValueError:
        raise ProfileError(
            f"unknown event kind {kind!r}; use one of {[k.value for k in EventKind]}"
        ) from None


def _check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise ProfileError(f"a user id must be a non-empty str, got {user_id!r}")
    return user_id


@dataclass(frozen=True)
class Event:
    """One thing a person did: ``item_id``, ``kind`` and when (``timestamp``, seconds since the
    Unix epoch, default now). ``kind`` accepts the enum or its value (``"purchase"``)."""

    item_id: str
    kind: EventKind
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ProfileError(f"an event's item_id must be a non-empty str, got {self.item_id!r}")
        object.__setattr__(self, "kind", _event_kind(self.kind))
        ts = self.timestamp
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise ProfileError(
                f"an event's timestamp must be finite seconds since the epoch, got {ts!r}"
            )
        object.__setattr__(self, "timestamp", float(ts))

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "kind": self.kind.value, "timestamp": self.timestamp}


@dataclass(frozen=True)
class Profile:
    """A user's history: ``events`` oldest first (``user_id`` None for an ad-hoc history)."""

    user_id: Optional[str]
    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        events = tuple(self.events)
        bad = [e for e in events if not isinstance(e, Event)]
        if bad:
            raise ProfileError(f"a profile holds Event objects, got {bad[0]!r}")
        object.__setattr__(self, "events", tuple(sorted(events, key=lambda e: e.timestamp)))

    @classmethod
    def from_events(cls, events: Iterable[Event], user_id: Optional[str] = None) -> Profile:
        return cls(user_id, tuple(events))

    def __len__(self) -> int:
        return len(self.events)

    @property
    def seen(self) -> frozenset[str]:
        """Items with any event other than a dismiss."""
        return frozenset(e.item_id for e in self.events if e.kind is not EventKind.DISMISS)

    @property
    def dismissed(self) -> frozenset[str]:
        """Items the person dismissed at least once."""
        return frozenset(e.item_id for e in self.events if e.kind is EventKind.DISMISS)

    def newest(self, n: int) -> Profile:
        """The same profile keeping only its ``n`` newest events."""
        return self if len(self.events) <= n else Profile(self.user_id, self.events[-n:])


def event_weights(weights: Mapping[Any, float] | None) -> Mapping[EventKind, float]:
    """``weights`` merged over :data:`DEFAULT_EVENT_WEIGHTS`, keys as :class:`EventKind`."""
    merged = dict(DEFAULT_EVENT_WEIGHTS)
    for kind, weight in (weights or {}).items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(
            weight
        ):
            raise ProfileError(f"the weight of {kind!r} must be a finite number, got {weight!r}")
        merged[_event_kind(kind)] = float(weight)
    return MappingProxyType(merged)


def user_vector(
    events: Sequence[Event],
    vectors: Mapping[str, np.ndarray],
    *,
    half_life_days: Optional[float] = None,
    weights: Mapping[Any, float] | None = None,
) -> Optional[np.ndarray]:
    """The user vector of a history (see the module docstring for the formula).

    ``vectors`` maps item ids to float32 ``(D,)`` vectors; events whose item is not in it are
    ignored. ``half_life_days`` and ``weights`` default to the recipe's
    (:class:`~edgerec.sdk.bundle.manifest.UserVectorRecipe`). Returns float32 ``(D,)`` of unit
    L2 norm, or None when no event with a positive weight has a vector (a new user, or only
    dismisses) or the weighted sum is zero.
    """
    if half_life_days is None:
        half_life_days = UserVectorRecipe().half_life_days
    if not half_life_days > 0:
        raise ProfileError(f"half_life_days must be > 0, got {half_life_days!r}")
    table = event_weights(weights)
    usable = [e for e in events if e.item_id in vectors and table[e.kind] != 0.0]
    if not any(table[e.kind] > 0 for e in usable):
        return None
    newest = max(e.timestamp for e in usable)
    ages = np.array([(newest - e.timestamp) / _SECONDS_PER_DAY for e in usable])
    w = np.array([table[e.kind] for e in usable]) * np.power(0.5, ages / half_life_days)
    stack = np.stack([np.asarray(vectors[e.item_id], dtype=np.float64) for e in usable])
    total = w @ stack / w[w > 0].sum()
    norm = float(np.linalg.norm(total))
    if not norm > 1e-12:
        return None
    return (total / norm).astype(np.float32)


_COLUMNS = {"seq", "user", "item", "kind", "ts"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq  INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events(user, ts);
"""


class ProfileStore:
    """Per-user event logs in one local SQLite file. Open with :meth:`open`.

    Safe to share between threads (calls are serialised); other processes may use the same
    file (SQLite's locking; a writer waits up to ``lock_timeout`` seconds).
    """

    def __init__(self, token: object, path: Path, conn: sqlite3.Connection) -> None:
        if token is not _TOKEN:
            raise TypeError("use ProfileStore.open(path)")
        self._path = path
        self._conn: Optional[sqlite3.Connection] = conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Union[str, os.PathLike], *, lock_timeout: float = 10.0) -> ProfileStore:
        """Open the profile file at ``path``, creating it (mode 0600) if it does not exist."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ProfileError(f"cannot open the profile file {path}: {exc}") from exc
        try:
            conn.execute("PRAGMA secure_delete=ON")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > PROFILE_FORMAT_VERSION:
                raise ProfileError(
                    f"{path} is profile format {version}, newer than the "
                    f"{PROFILE_FORMAT_VERSION} this edgerec reads; upgrade edgerec"
                )
            tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE "
                                                 "type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            if tables and (tables != {"events"} or columns != _COLUMNS):
                raise ProfileError(
                    f"{path} is an SQLite file but not an edgerec profile file; choose another path"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={PROFILE_FORMAT_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise ProfileError(
                f"{path} is not a usable profile file ({exc}); move it away or choose another path"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return cls(_TOKEN, path, conn)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the file; safe to call more than once."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProfileStore({str(self._path)!r}{', closed' if self._conn is None else ''})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProfileError(f"the profile store {self._path} is closed; open it again")
        return self._conn

    def record(self, user_id: str, events: Union[Event, Iterable[Event]]) -> None:
        """Append one event or several to the user's log (one transaction)."""
        _check_user(user_id)
        batch = [events] if isinstance(events, Event) else list(events)
        bad = [e for e in batch if not isinstance(e, Event)]
        if bad:
            raise ProfileError(f"record() takes Event objects, got {bad[0]!r}")
        rows = [(user_id, e.item_id, e.kind.value, e.timestamp) for e in batch]
        with self._lock:
            try:
                with self._transaction() as conn:
                    conn.executemany(
                        "INSERT INTO events(user, item, kind, ts) VALUES (?, ?, ?, ?)", rows
                    )
            except sqlite3.Error as exc:
                raise ProfileError(f"could not write to {self._path}: {exc}") from exc

    def history(self, user_id: str, *, limit: Optional[int] = None) -> tuple[Event, ...]:
        """The user's events, oldest first; ``limit``: only the newest ``limit``. Unknown
        users have an empty history."""
        _check_user(user_id)
        sql = "SELECT item, kind, ts FROM events WHERE user = ? ORDER BY ts DESC, seq DESC"
        params: list[Any] = [user_id]
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ProfileError(f"limit must be a non-negative int or None, got {limit!r}")
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            try:
                rows = self._db().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise ProfileError(f"could not read {self._path}: {exc}") from exc
        return tuple(Event(item, EventKind(kind), ts) for item, kind, ts in reversed(rows))

    def profile(self, user_id: str, *, limit: Optional[int] = None) -> Profile:
        """The user's :class:`Profile` (events oldest first; ``limit`` newest only)."""
        return Profile(user_id, self.history(user_id, limit=limit))

    def users(self) -> list[str]:
        """Every user with at least one event, sorted."""
        with self._lock:
            rows = self._db().execute("SELECT DISTINCT user FROM events ORDER BY user")
            return [u for (u,) in rows]

    def forget(self, user_id: str) -> int:
        """Delete everything about the user; returns the number of events deleted.

        The rows are overwritten with zeros (``secure_delete``), the file is rebuilt
        (``VACUUM``: secure_delete alone leaves copies of deleted index keys in the unallocated
        space of pages that were split or merged), then the WAL is checkpointed and truncated,
        and the truncation fsynced (SQLite does not: a power cut could bring the old frames
        back), so once it returns the deletion survives a power cut too. If another connection
        is reading the file at that moment, the WAL keeps old pages until the next checkpoint
        (the next ``forget``, the WAL passing 1000 pages, or the last connection closing). A
        ``forget`` interrupted by a crash has deleted the user or not (one transaction) but may
        not have scrubbed the file: calling it again, for the same user or any other, finishes
        the scrub (it rebuilds the file even when nothing matches).
        """
        _check_user(user_id)
        with self._lock:
            try:
                with self._transaction() as conn:
                    deleted = conn.execute("DELETE FROM events WHERE user = ?", (user_id,)).rowcount
                # Always rebuild, even when nothing was deleted now: a forget killed after its
                # delete committed but before this VACUUM left the rows' bytes behind, and
                # calling forget again must finish the job.
                self._db().execute("VACUUM")
                self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                _fsync_if_exists(Path(f"{self._path}-wal"))
            except (sqlite3.Error, OSError) as exc:
                raise ProfileError(f"could not delete from {self._path}: {exc}") from exc
        return int(deleted)

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _fsync_if_exists(path: Path) -> None:
    """fsync ``path`` if it exists. SQLite truncates the WAL in ``wal_checkpoint(TRUNCATE)``
    without an fsync: until the file system commits the new length by itself, a power cut
    brings back the old frames, and with them the rows of a user that ``forget`` deleted."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TOKEN = object()
