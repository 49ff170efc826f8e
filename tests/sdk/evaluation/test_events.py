"""Events CSV reading and the per-user holdout split (edgerec.sdk.evaluation.events)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE
from edgerec.sdk import EventKind, ProfileError
from edgerec.sdk.evaluation.events import (
    Interaction,
    SplitProtocol,
    holdout_split,
    read_events,
    strategy_protocol,
)


def write(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_the_shipped_owner_data_with_a_renamed_user_column():
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    assert len(log) == log.report.rows == 200
    assert not log.has_timestamps
    assert all(i.kind is EventKind.PURCHASE and i.weight == 1.0 for i in log.interactions)
    assert len(log.report.sha256) == 64


def test_bad_rows_are_counted_with_line_numbers_not_fatal(tmp_path):
    path = write(tmp_path, "user_id,item_id,event,timestamp,weight\n"
                 "a,x,purchase,10,1\n"
                 "a,x,purchase,10,1\n"          # duplicate
                 ",y,purchase,11,1\n"           # blank user
                 "a,ghost,purchase,12,1\n"      # unknown item
                 "a,y,teleport,13,1\n"          # unknown event kind
                 "a,y,view,notatime,1\n"        # bad timestamp
                 "a,y,view,14,-2\n"             # bad weight
                 "b,y,click,,1\n")              # missing timestamp
    log = read_events(path, known_items={"x", "y"})
    r = log.report
    assert (r.rows, r.kept) == (8, 2)
    assert (r.duplicates, r.blank_users, r.unknown_items, r.bad_rows, r.missing_timestamps) == (
        1, 1, 1, 3, 1)
    assert r.examples["duplicates"] == (3,) and r.examples["unknown_items"] == (5,)
    assert not log.has_timestamps  # one kept event lacks one: order by file line instead
    assert "unknown items: 1" in r.summary()


def test_iso_timestamps_and_out_of_order_rows(tmp_path):
    path = write(tmp_path, "user_id,item_id,timestamp\n"
                 "a,x,2026-01-02T00:00:00Z\n"
                 "a,y,2026-01-01T00:00:00Z\n"
                 "a,z,1767398400\n")
    log = read_events(path)
    assert log.has_timestamps and log.report.out_of_order == 1
    assert [i.item_id for i in log.by_user()["a"]] == ["y", "x", "z"]


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("user_id,item_id\n", "no events"),
    ("user,item\na,b\n", "needs a header"),
])
def test_unusable_files_raise_profile_error_saying_what_to_do(tmp_path, text, needle):
    with pytest.raises(ProfileError, match=needle):
        read_events(write(tmp_path, text))


def test_missing_and_non_utf8_files_raise_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        read_events(tmp_path / "absent.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("user_id,item_id\nj\xf6rg,x\n".encode("latin-1"))
    with pytest.raises(ProfileError, match="UTF-8"):
        read_events(bad)


def test_the_fraction_split_with_timestamps_holds_out_the_newest_fraction(tmp_path):
    rows = "".join(f"a,i{k},{100 + k}\n" for k in range(10)) + "b,j0,5\nb,j1,6\nc,k0,1\n"
    log = read_events(write(tmp_path, "user_id,item_id,timestamp\n" + rows))
    split = holdout_split(log, test_fraction=0.2, seed=0)
    assert split.strategy == "newest_fraction" and split.protocol is SplitProtocol.FRACTION
    assert [e.item_id for e in split.test["a"]] == ["i8", "i9"]
    assert [e.item_id for e in split.test["b"]] == ["j1"]
    assert "c" not in split.test and split.skipped_users == 1  # one item: nothing to hold out
    assert [e.item_id for e in split.train["b"]] == ["j0"]


def test_random_holdout_is_seeded_disjoint_and_keeps_a_history():
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    a = holdout_split(log, test_fraction=0.2, seed=3)
    b = holdout_split(log, test_fraction=0.2, seed=3)
    c = holdout_split(log, test_fraction=0.2, seed=4)
    assert a.strategy == "random" and a.test == b.test and a.test != c.test
    for user, held in a.test.items():
        train_items = {e.item_id for e in a.train[user]}
        assert train_items and not train_items & {e.item_id for e in held}
    total = sum(len(v) for v in a.train.values()) + sum(len(v) for v in a.test.values())
    assert total == len(log)
    assert a.describe()["test_users"] == len(a.test)


def test_every_event_of_a_held_out_item_leaves_train_and_dismisses_are_never_targets():
    events = [Interaction("a", "x", EventKind.VIEW, 1.0, line=1),
              Interaction("a", "y", EventKind.PURCHASE, 2.0, line=2),
              Interaction("a", "z", EventKind.DISMISS, 3.0, line=3),
              Interaction("a", "y", EventKind.CLICK, 4.0, line=4)]
    split = holdout_split(events, test_fraction=0.5, timestamps=True)
    assert [e.item_id for e in split.test["a"]] == ["y", "y"]
    assert [e.item_id for e in split.train["a"]] == ["x", "z"]


def test_test_fraction_zero_keeps_everything_for_training_and_bad_fractions_raise():
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    split = holdout_split(log, test_fraction=0.0)
    assert not split.test and split.skipped_users == 0
    with pytest.raises(ProfileError, match="test_fraction"):
        holdout_split(log, test_fraction=1.0)


def test_interaction_becomes_a_device_event_ordered_by_line_without_timestamps():
    ev = Interaction("a", "x", EventKind.CLICK, None, 1.0, line=7).to_event()
    assert (ev.item_id, ev.kind, ev.timestamp) == ("x", EventKind.CLICK, 7.0)


def test_leave_last_out_holds_out_each_users_newest_distinct_item_ties_by_line(tmp_path):
    rows = ("a,x,10\n"   # line 2
            "a,y,30\n"   # line 3
            "a,z,30\n"   # line 4: same second as y, later line -> newest
            "a,x,20\n"   # x again, older than y and z
            "b,p,5\nb,q,5\n"
            "c,k,1\n")   # one item: nothing to hold out
    log = read_events(write(tmp_path, "user_id,item_id,timestamp\n" + rows))
    split = holdout_split(log, protocol="leave-last-out", test_fraction=0.5, seed=9)
    assert (split.strategy, split.test_fraction) == ("leave_last_out", 0.0)
    assert split.protocol is SplitProtocol.LEAVE_LAST_OUT
    assert {u: [e.item_id for e in ev] for u, ev in split.test.items()} == {"a": ["z"],
                                                                           "b": ["q"]}
    assert [e.item_id for e in split.train["a"]] == ["x", "x", "y"]
    assert "c" not in split.test and split.skipped_users == 1
    assert split.describe()["protocol"] == "leave-last-out"
    # the held-out item is always among the newest fraction's, whatever the fraction
    for fraction in (0.1, 0.5, 0.9):
        newest = holdout_split(log, test_fraction=fraction)
        for user, held in split.test.items():
            assert {e.item_id for e in held} <= {e.item_id for e in newest.test[user]}


def test_leave_last_out_on_the_shipped_owners_holds_out_each_owners_last_line():
    log = read_events(SAMPLE / "items.csv", user_column="owner_id")
    split = holdout_split(log, protocol=SplitProtocol.LEAVE_LAST_OUT)
    for user, held in split.test.items():
        events = log.by_user()[user]
        assert [e.item_id for e in held] == [events[-1].item_id]
        assert len(split.train[user]) == len(events) - 1
    assert len(split.test) + split.skipped_users == len(log.users)


def test_recorded_strategies_name_their_protocol():
    assert strategy_protocol("leave_last_out", 0.0) is SplitProtocol.LEAVE_LAST_OUT
    assert strategy_protocol("leave_last_out", 0.2) is SplitProtocol.FRACTION  # older records
    assert strategy_protocol("newest_fraction", 0.2) is SplitProtocol.FRACTION
    assert strategy_protocol("random", 0.2) is SplitProtocol.FRACTION
    with pytest.raises(ValueError):
        holdout_split([], protocol="leave-one-out")
