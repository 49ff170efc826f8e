"""Interaction events from a CSV, checked against a catalog, and the per-user holdout split.

The scorer's training (``edgerec export --events``) and its evaluation (``edgerec evaluate``)
read events through :func:`read_events` and split them through :func:`holdout_split`, so both
see the same held-out events for the same ``(seed, test_fraction)``::

    log = read_events("events.csv", known_items=catalog_ids)   # EventLog
    print(log.report)                                           # what was dropped and why
    split = holdout_split(log, test_fraction=0.2, seed=0)       # Holdout(train, test)
    llo = holdout_split(log, protocol=SplitProtocol.LEAVE_LAST_OUT)  # each user's newest item

CSV columns: ``user_id,item_id[,event][,timestamp][,weight]`` (header required; extra columns
are ignored; ``user_column``/``item_column`` rename the two ids, e.g. ``owner_id`` for
``clothing-small/items.csv``). ``event`` is an :class:`~edgerec.sdk.profile.EventKind` value
(default ``purchase``); ``timestamp`` is seconds since the epoch or ISO 8601; ``weight`` is a
positive number (default 1) that weights the event in training.

Nothing here is fatal for a bad row: unknown items, blank users, unparseable fields and
duplicates are counted in :class:`EventsReport` (with the first few line numbers) and dropped.
An unreadable or empty file, or one without the two id columns, raises :class:`ProfileError`.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.profile import Event, EventKind

__all__ = [
    "EventLog",
    "EventsReport",
    "Holdout",
    "Interaction",
    "SplitProtocol",
    "holdout_split",
    "read_events",
    "strategy_protocol",
]

_EXAMPLES = 5  # line numbers kept per kind of problem


class SplitProtocol(str, Enum):
    """How :func:`holdout_split` chooses each user's held-out items.

    ``LEAVE_LAST_OUT``: the user's newest distinct positive item (by timestamp, ties and
    logs without timestamps by CSV line), everything else as history; the usual offline
    protocol for a feed. ``FRACTION``: ``test_fraction`` of the user's distinct positive items,
    the newest when every event has a timestamp, else a seeded random choice (what the scorer's
    training holds out).
    """

    LEAVE_LAST_OUT = "leave-last-out"
    FRACTION = "fraction"


@dataclass(frozen=True)
class Interaction:
    """One event: ``user_id`` did ``kind`` with ``item_id`` at ``timestamp`` (seconds, or None
    when the file has none); ``weight`` > 0 weights it in training; ``line`` is its CSV line."""

    user_id: str
    item_id: str
    kind: EventKind = EventKind.PURCHASE
    timestamp: Optional[float] = None
    weight: float = 1.0
    line: int = 0

    @property
    def positive(self) -> bool:
        """True for every kind but ``dismiss``."""
        return self.kind is not EventKind.DISMISS

    def to_event(self) -> Event:
        """The :class:`Event` a device profile would hold (a missing timestamp becomes the CSV
        line number, so file order decides recency, as it does for the split)."""
        ts = self.timestamp if self.timestamp is not None else float(self.line)
        return Event(self.item_id, self.kind, ts)


@dataclass(frozen=True)
class EventsReport:
    """What :func:`read_events` read and dropped. ``examples`` maps each problem to the first
    few CSV line numbers where it happened."""

    path: str
    rows: int
    kept: int
    users: int
    items: int
    unknown_items: int = 0
    blank_users: int = 0
    bad_rows: int = 0
    duplicates: int = 0
    missing_timestamps: int = 0
    out_of_order: int = 0
    single_event_users: int = 0
    sha256: str = ""
    examples: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["examples"] = {k: list(v) for k, v in self.examples.items()}
        return out

    def summary(self) -> str:
        """One line for a CLI: counts of everything dropped or odd."""
        parts = [f"{self.kept} of {self.rows} events kept ({self.users} users, {self.items} items)"]
        for name in ("unknown_items", "blank_users", "bad_rows", "duplicates",
                     "missing_timestamps", "out_of_order", "single_event_users"):
            value = getattr(self, name)
            if value:
                where = self.examples.get(name)
                lines = f" (lines {', '.join(map(str, where))}...)" if where else ""
                parts.append(f"{name.replace('_', ' ')}: {value}{lines}")
        return "; ".join(parts)


@dataclass(frozen=True)
class EventLog:
    """Checked events, file order kept; ``has_timestamps`` when every kept event has one."""

    interactions: tuple[Interaction, ...]
    report: EventsReport
    has_timestamps: bool

    def __len__(self) -> int:
        return len(self.interactions)

    @property
    def users(self) -> list[str]:
        """User ids in order of first appearance."""
        return list(dict.fromkeys(i.user_id for i in self.interactions))

    @property
    def items(self) -> list[str]:
        """Item ids in order of first appearance."""
        return list(dict.fromkeys(i.item_id for i in self.interactions))

    def by_user(self) -> dict[str, list[Interaction]]:
        """Each user's events, oldest first (timestamp, then file order)."""
        out: dict[str, list[Interaction]] = {}
        for it in self.interactions:
            out.setdefault(it.user_id, []).append(it)
        for events in out.values():
            events.sort(key=_order_key)
        return out


@dataclass(frozen=True)
class Holdout:
    """A per-user split: ``train`` and ``test`` map user ids to their events, oldest first.

    ``test`` holds positive events only and only users with at least one positive event left
    in ``train`` (a history to recommend from). ``strategy`` names what was held out:
    ``"leave_last_out"`` (:attr:`SplitProtocol.LEAVE_LAST_OUT`: each user's newest distinct
    item; ``test_fraction`` is recorded as 0), ``"newest_fraction"`` (the newest
    ``test_fraction`` of each user's items) or ``"random"`` (a seeded random ``test_fraction``).
    Records written before the leave-last-out protocol existed call ``"newest_fraction"``
    ``"leave_last_out"`` with a ``test_fraction`` above 0 (:func:`strategy_protocol`).
    """

    train: Mapping[str, tuple[Interaction, ...]]
    test: Mapping[str, tuple[Interaction, ...]]
    strategy: str
    seed: int
    test_fraction: float
    skipped_users: int

    @property
    def protocol(self) -> SplitProtocol:
        return strategy_protocol(self.strategy, self.test_fraction)

    def describe(self) -> dict[str, Any]:
        """The split's parameters and sizes (what a manifest records)."""
        return {
            "protocol": self.protocol.value, "strategy": self.strategy, "seed": self.seed,
            "test_fraction": self.test_fraction,
            "train_users": len(self.train), "test_users": len(self.test),
            "train_events": sum(len(v) for v in self.train.values()),
            "test_events": sum(len(v) for v in self.test.values()),
            "skipped_users": self.skipped_users,
        }


def _order_key(it: Interaction) -> tuple[float, int]:
    return (it.timestamp if it.timestamp is not None else -math.inf, it.line)


def _parse_time(text: str) -> Optional[float]:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {text!r} is neither seconds nor ISO 8601") from None
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"timestamp {text!r} is not finite")
    return value


def _read_text(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read the events file {path}: {exc.strerror or exc}; "
                           "pass a CSV with user_id,item_id columns") from exc
    try:
        return data, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path} is not UTF-8 text (byte {exc.start}); save the events as "
                           "a UTF-8 CSV") from None


class _RowChecker:
    """Turns CSV rows into :class:`Interaction` s, counting what it drops and why."""

    KINDS = ("unknown_items", "blank_users", "bad_rows", "duplicates", "missing_timestamps",
             "out_of_order")

    def __init__(self, known: Optional[set[str]], default: EventKind, user_column: str,
                 item_column: str, has_time_column: bool) -> None:
        self.known, self.default = known, default
        self.user_column, self.item_column = user_column, item_column
        self.has_time_column = has_time_column
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.examples: dict[str, list[int]] = {}
        self.seen: set[tuple] = set()
        self.last_time: dict[str, float] = {}

    def note(self, kind: str, line: int) -> None:
        self.counts[kind] += 1
        where = self.examples.setdefault(kind, [])
        if len(where) < _EXAMPLES:
            where.append(line)

    def check(self, row: Mapping[str, Optional[str]], line: int) -> Optional[Interaction]:
        """The row's interaction, or None (and a count) when it is dropped."""
        user = (row.get(self.user_column) or "").strip()
        item = (row.get(self.item_column) or "").strip()
        if not user or not item:
            self.note("blank_users" if not user else "bad_rows", line)
            return None
        try:
            kind = EventKind((row.get("event") or "").strip() or self.default)
            ts = _parse_time(row.get("timestamp") or "")
            weight = float((row.get("weight") or "").strip() or 1.0)
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError("weight must be > 0")
        except ValueError:
            self.note("bad_rows", line)
            return None
        if self.known is not None and item not in self.known:
            self.note("unknown_items", line)
            return None
        key = (user, item, kind, ts)
        if key in self.seen:
            self.note("duplicates", line)
            return None
        self.seen.add(key)
        if ts is None:
            if self.has_time_column:
                self.note("missing_timestamps", line)
        else:
            if ts < self.last_time.get(user, -math.inf):
                self.note("out_of_order", line)
            self.last_time[user] = max(ts, self.last_time.get(user, -math.inf))
        return Interaction(user, item, kind, ts, weight, line)


def read_events(
    path: Union[str, os.PathLike],
    *,
    known_items: Optional[Collection[str]] = None,
    user_column: str = "user_id",
    item_column: str = "item_id",
    default_kind: Union[EventKind, str] = EventKind.PURCHASE,
) -> EventLog:
    """Read and check an events CSV (see the module docstring for the format).

    ``known_items``: the catalog's ids; events for other items are counted as
    ``unknown_items`` and dropped (None keeps every item). An exact repeat of an earlier
    ``(user, item, event, timestamp)`` is a duplicate and dropped.

    Raises:
        ProfileError: the file is missing, unreadable, empty or lacks the id columns.
    """
    path = Path(path)
    data, text = _read_text(path)
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    missing = [c for c in (user_column, item_column) if c not in columns]
    if missing:
        what = "is empty" if not columns else f"has columns {columns}"
        raise ProfileError(
            f"{path} {what}; an events CSV needs a header with {user_column!r} and "
            f"{item_column!r} (optional: event, timestamp, weight)"
        )
    checker = _RowChecker(None if known_items is None else set(known_items),
                          EventKind(default_kind), user_column, item_column,
                          "timestamp" in columns)
    kept, rows = [], 0
    for row in reader:
        rows += 1
        interaction = checker.check(row, reader.line_num)
        if interaction is not None:
            kept.append(interaction)
    if rows == 0:
        raise ProfileError(f"{path} has a header but no events; add rows user_id,item_id,...")
    return _event_log(path, data, rows, kept, checker)


def _event_log(path: Path, data: bytes, rows: int, kept: list[Interaction],
               checker: _RowChecker) -> EventLog:
    has_ts = bool(kept) and all(i.timestamp is not None for i in kept)
    if not has_ts:  # a partial timestamp column cannot order a user's history
        kept = [Interaction(i.user_id, i.item_id, i.kind, None, i.weight, i.line) for i in kept]
    per_user: dict[str, int] = {}
    for it in kept:
        per_user[it.user_id] = per_user.get(it.user_id, 0) + 1
    report = EventsReport(
        path=str(path), rows=rows, kept=len(kept), users=len(per_user),
        items=len({i.item_id for i in kept}),
        single_event_users=sum(1 for n in per_user.values() if n == 1),
        sha256=hashlib.sha256(data).hexdigest(),
        examples={k: tuple(v) for k, v in checker.examples.items()}, **checker.counts,
    )
    return EventLog(tuple(kept), report, has_ts)


def strategy_protocol(strategy: str, test_fraction: float) -> SplitProtocol:
    """The protocol a recorded ``(strategy, test_fraction)`` pair was made with (an older
    record's ``"leave_last_out"`` with a fraction above 0 was the newest fraction)."""
    if strategy == "leave_last_out" and test_fraction == 0:
        return SplitProtocol.LEAVE_LAST_OUT
    return SplitProtocol.FRACTION


def holdout_split(
    log: Union[EventLog, Iterable[Interaction]],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    timestamps: Optional[bool] = None,
    protocol: Union[SplitProtocol, str] = SplitProtocol.FRACTION,
) -> Holdout:
    """Split each user's distinct positive items into history (``train``) and held-out
    (``test``).

    ``protocol`` :attr:`~SplitProtocol.FRACTION` holds out ``test_fraction`` of them (at least
    one, and always leaving one in train): the newest when ``timestamps`` (default: the log has
    them), else a seeded random choice. :attr:`~SplitProtocol.LEAVE_LAST_OUT` holds out the
    newest one (``test_fraction`` and ``seed`` are not used; without timestamps the file order
    decides, so the last line's item is held out). "Newest" is the item whose latest event is
    latest, ties broken by CSV line, so a leave-last-out item is always among the items the
    newest-fraction split holds out.

    Users with fewer than two distinct positive items stay whole in ``train`` and are counted
    in ``skipped_users``. A held-out item's every event goes to ``test``'s side (dropped from
    ``train``), so no trace of it is trained on. ``test_fraction`` 0 with the fraction protocol
    puts everything in ``train`` (nothing to evaluate).
    """
    protocol = SplitProtocol(protocol)
    if not 0.0 <= test_fraction < 1.0:
        raise ProfileError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if isinstance(log, EventLog):
        by_user = log.by_user()
        ordered = log.has_timestamps if timestamps is None else timestamps
    else:
        by_user = EventLog(tuple(log), EventsReport("", 0, 0, 0, 0), False).by_user()
        ordered = bool(timestamps)
    last_out = protocol is SplitProtocol.LEAVE_LAST_OUT
    rng = np.random.default_rng(seed)
    train: dict[str, tuple[Interaction, ...]] = {}
    test: dict[str, tuple[Interaction, ...]] = {}
    skipped = 0
    for user in sorted(by_user):
        events = by_user[user]
        items = list(dict.fromkeys(e.item_id for e in events if e.positive))  # oldest first
        if last_out:
            n_test = min(1, len(items) - 1)
        else:
            n_test = 0 if test_fraction == 0 else min(len(items) - 1,
                                                       max(1, round(test_fraction * len(items))))
        if n_test < 1:
            skipped += last_out or test_fraction > 0
            train[user] = tuple(events)
            continue
        if ordered or last_out:
            last_seen = {e.item_id: i for i, e in enumerate(events)}
            items.sort(key=lambda item: last_seen[item])
            held = set(items[-n_test:])
        else:
            held = set(rng.choice(np.array(items, dtype=object), n_test, replace=False))
        train[user] = tuple(e for e in events if e.item_id not in held)
        test[user] = tuple(e for e in events if e.item_id in held and e.positive)
    if last_out:
        strategy, fraction = "leave_last_out", 0.0
    else:
        strategy, fraction = ("newest_fraction" if ordered else "random"), float(test_fraction)
    return Holdout(train, test, strategy, seed, fraction, skipped)


def positives(events: Sequence[Interaction]) -> list[str]:
    """Distinct positive item ids of ``events``, oldest first."""
    return list(dict.fromkeys(e.item_id for e in events if e.positive))
