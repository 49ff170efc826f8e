"""User profiles: events, the persistent per-user log, forgetting, and the user vector."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import done_steps
from edgerec.sdk import (
    DEFAULT_EVENT_WEIGHTS,
    EdgeRecError,
    Event,
    EventKind,
    Profile,
    ProfileError,
    ProfileStore,
    user_vector,
)

DAY = 86400.0
T0 = 1_700_000_000.0


@pytest.fixture()
def store(tmp_path):
    with ProfileStore.open(tmp_path / "profiles.sqlite") as s:
        yield s


# ------------------------------------------------------------------ events and profiles


def test_event_accepts_the_kind_value_and_defaults_the_time_to_now():
    e = Event("sku-1", "purchase")
    assert e.kind is EventKind.PURCHASE and abs(e.timestamp - __import__("time").time()) < 60
    assert e.to_dict()["kind"] == "purchase"


@pytest.mark.parametrize(
    ("args", "message"),
    [(("", "view", T0), "item_id"), (("a", "like", T0), "unknown event kind"),
     (("a", "view", float("nan")), "timestamp"), (("a", "view", "yesterday"), "timestamp")],
)
def test_bad_events_raise_profile_error(args, message):
    with pytest.raises(ProfileError, match=message):
        Event(*args)
    assert issubclass(ProfileError, EdgeRecError) and issubclass(ProfileError, ValueError)


def test_profile_sorts_events_and_splits_seen_from_dismissed():
    p = Profile("u", (Event("b", "dismiss", T0 + 2), Event("a", "view", T0),
                      Event("c", "purchase", T0 + 1)))
    assert [e.item_id for e in p.events] == ["a", "c", "b"]
    assert p.seen == {"a", "c"} and p.dismissed == {"b"}
    assert [e.item_id for e in p.newest(2).events] == ["c", "b"] and len(p) == 3


# ------------------------------------------------------------------ the store


def test_events_persist_per_user_oldest_first(tmp_path):
    path = tmp_path / "p.sqlite"
    with ProfileStore.open(path) as s:
        s.record("alice", Event("x", "view", T0 + 5))
        s.record("alice", [Event("y", "click", T0), Event("z", "purchase", T0 + 9)])
        s.record("bob", Event("x", "add_to_cart", T0))
    with ProfileStore.open(path) as s:
        assert [(e.item_id, e.kind) for e in s.history("alice")] == [
            ("y", EventKind.CLICK), ("x", EventKind.VIEW), ("z", EventKind.PURCHASE)]
        assert [e.item_id for e in s.history("alice", limit=2)] == ["x", "z"]
        assert s.users() == ["alice", "bob"]
        assert s.profile("bob") == Profile("bob", (Event("x", "add_to_cart", T0),))
        assert s.history("carol") == ()


def test_the_profile_file_is_private_to_its_owner(store):
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_forget_removes_every_trace_of_the_user_from_the_files(tmp_path):
    path = tmp_path / "p.sqlite"
    secret_user, secret_item = "alice-7f3a9c", "sku-private-d41d8c"
    with ProfileStore.open(path) as s:
        for i in range(200):  # enough rows to span several pages
            s.record(secret_user, Event(f"{secret_item}-{i}", "purchase", T0 + i))
            s.record("bob", Event(f"bob-item-{i}", "view", T0 + i))
        assert s.forget(secret_user) == 200
        assert s.history(secret_user) == () and s.users() == ["bob"]
        assert len(s.history("bob")) == 200
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert secret_user.encode() not in on_disk and secret_item.encode() not in on_disk
        assert b"bob-item-17" in on_disk
        assert s.forget(secret_user) == 0
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret_user.encode() not in on_disk and secret_item.encode() not in on_disk


def test_forget_leaves_no_trace_among_many_users_whose_pages_were_rebalanced(tmp_path):
    """Many users recorded and forgotten in turn: index pages split and merge, and SQLite's
    secure_delete alone left a forgotten id in a page's unallocated space (issue 16's crash
    harness found one in 191)."""
    path = tmp_path / "p.sqlite"
    forgotten, live = [], []
    with ProfileStore.open(path) as s:
        for step in range(1400):
            user = f"user-{step // 3:05d}"
            if step % 6 == 5 and live and live[0] != user:
                s.forget(live[0])
                forgotten.append(live.pop(0))
            else:
                s.record(user, [Event(f"i{step}-{j}", "view", T0 + step) for j in range(3)])
                if user not in live:
                    live.append(user)
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        left = [u for u in forgotten if u.encode() in on_disk]
        assert not left, f"{len(left)} of {len(forgotten)} forgotten users left bytes behind"
        assert sorted(s.users()) == sorted(live)


def test_forget_again_after_a_crash_between_delete_and_vacuum_scrubs_the_file(tmp_path):
    """A forget killed after its delete committed, before its VACUUM, leaves a copy of the id
    in an index page's free space (user 90 of this schedule, found by issue 16's crash
    harness); forget must finish the scrub when called again, though nothing is left to
    delete."""
    path = tmp_path / "p.sqlite"
    victim = "user00090"
    with ProfileStore.open(path) as s:
        for u in range(300):
            s.record(f"user{u:05d}", [Event(f"s{u}-{j}", "view", float(u)) for j in range(3)])
        for u in range(91):  # forgets killed after their DELETE committed
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("DELETE FROM events WHERE user = ?", (f"user{u:05d}",))
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        assert victim.encode() in path.read_bytes()  # the crash left bytes behind
        assert s.forget(victim) == 0
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert victim.encode() not in on_disk
        assert len(s.users()) == 300 - 91


_KILLED_WORKER = """
import sys
from edgerec.sdk.profile import Event, ProfileStore
with ProfileStore.open(sys.argv[1]) as store:
    print("ready", flush=True)
    for step in range(int(sys.argv[2]), 10**6):
        if step % 4 == 3:
            store.forget(f"user-{step - 3:06d}")
        else:
            events = [Event(f"s{step}-{j}", "view", step) for j in range(3)]
            store.record(f"user-{step:06d}", events)
        print("done", step, flush=True)
"""


def _profiles_after(steps: int) -> dict[str, tuple[str, ...]]:
    """What the killed worker's profiles hold once ``steps`` steps have committed."""
    return {f"user-{s:06d}": tuple(f"s{s}-{j}" for j in range(3)) for s in range(steps)
            if s % 4 != 3 and not (s % 4 == 0 and s + 3 < steps)}


def test_killed_profile_writer_keeps_every_returned_record_and_forget(tmp_path):
    """SIGKILL during record/forget (issue 16, the short version of benchmarks/crash_faults.py):
    every step whose call returned is there, at most one more, and no byte of a user whose
    forget returned. stdout is read unbuffered: a buffered readline() for "ready" would read
    "done" lines ahead that communicate() then never returns (the harness's own false fault)."""
    path = tmp_path / "p.sqlite"
    committed, returned = 0, set()
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WORKER, str(path), str(committed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        first = proc.stdout.readline()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
        done = done_steps(first + out)
        returned.update(done)
        last = done[-1] + 1 if done else committed
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        left = [s - 3 for s in returned if s % 4 == 3 and f"user-{s - 3:06d}".encode() in raw]
        assert not left, f"users whose forget returned left bytes: {left[:5]}"
        with ProfileStore.open(path) as store:
            got = {u: tuple(e.item_id for e in store.history(u)) for u in store.users()}
        assert got in (_profiles_after(last), _profiles_after(last + 1))
        committed = last if got == _profiles_after(last) else last + 1
    assert committed > 20


def test_bad_user_ids_and_closed_stores_raise(store):
    with pytest.raises(ProfileError, match="user id"):
        store.record("", Event("a", "view"))
    with pytest.raises(ProfileError, match="Event objects"):
        store.record("u", ["a"])
    store.close()
    store.close()
    with pytest.raises(ProfileError, match="closed"):
        store.history("u")


def test_a_foreign_or_newer_file_is_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE events (id INTEGER, payload TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ProfileError, match="not an edgerec profile"):
        ProfileStore.open(other)
    newer = tmp_path / "newer.sqlite"
    ProfileStore.open(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(ProfileError, match="upgrade edgerec"):
        ProfileStore.open(newer)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ProfileError, match="not a usable profile"):
        ProfileStore.open(tmp_path / "junk.sqlite")


def test_the_store_can_be_shared_between_threads(store):
    def work(n):
        for i in range(20):
            store.record(f"user{n}", Event(f"i{i}", "click", T0 + i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.users() == [f"user{n}" for n in range(4)]
    assert all(len(store.history(u)) == 20 for u in store.users())


# ------------------------------------------------------------------ the user vector

E1, E2, E3 = np.eye(3, dtype=np.float32)
VECTORS = {"a": E1, "b": E2, "c": E3}


def test_user_vector_weights_events_by_kind_and_half_life():
    # a: purchase (2) one half-life before b's purchase (2) -> weights 1 and 2
    events = [Event("a", "purchase", T0), Event("b", "purchase", T0 + 30 * DAY)]
    u = user_vector(events, VECTORS, half_life_days=30)
    np.testing.assert_allclose(u, np.array([1, 2, 0]) / np.sqrt(5), atol=1e-6)
    assert u.dtype == np.float32
    # a view (0.25) and a click (0.5) at the same time
    u = user_vector([Event("a", "view", T0), Event("b", "click", T0)], VECTORS)
    np.testing.assert_allclose(u, np.array([1, 2, 0]) / np.sqrt(5), atol=1e-6)


def test_user_vector_does_not_depend_on_the_wall_clock():
    events = [Event("a", "purchase", T0), Event("b", "view", T0 + 3 * DAY),
              Event("c", "dismiss", T0 + 9 * DAY)]
    shifted = [Event(e.item_id, e.kind, e.timestamp + 400 * DAY) for e in events]
    np.testing.assert_allclose(user_vector(events, VECTORS), user_vector(shifted, VECTORS),
                               atol=1e-7)


def test_a_dismiss_subtracts_its_item():
    u = user_vector([Event("a", "purchase", T0), Event("b", "dismiss", T0)], VECTORS)
    np.testing.assert_allclose(u, np.array([2, -1, 0]) / np.sqrt(5), atol=1e-6)
    assert DEFAULT_EVENT_WEIGHTS[EventKind.DISMISS] < 0


def test_no_positive_known_event_gives_no_vector():
    assert user_vector([], VECTORS) is None
    assert user_vector([Event("a", "dismiss", T0)], VECTORS) is None
    assert user_vector([Event("unknown", "purchase", T0)], VECTORS) is None
    u = user_vector([Event("unknown", "purchase", T0), Event("c", "view", T0)], VECTORS)
    np.testing.assert_allclose(u, E3)


def test_custom_weights_merge_over_the_defaults():
    events = [Event("a", "view", T0), Event("b", "purchase", T0)]
    u = user_vector(events, VECTORS, weights={"view": 2.0})
    np.testing.assert_allclose(u, np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)
    with pytest.raises(ProfileError, match="unknown event kind"):
        user_vector(events, VECTORS, weights={"like": 1.0})
    with pytest.raises(ProfileError, match="half_life_days"):
        user_vector(events, VECTORS, half_life_days=0)
