"""Events CSV reading and the per-user holdout split (edgerec.sdk.evaluation.events)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE
from edgerec.sdk import EventKind, ProfileError
from edgerec.sdk.evaluation.events import Interaction, holdout_split, read_events


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


def test_leave_last_out_holds_out_the_newest_items(tmp_path):
    rows = "".join(f"a,i{k},{100 + k}\n" for k in range(10)) + "b,j0,5\nb,j1,6\nc,k0,1\n"
    log = read_events(write(tmp_path, "user_id,item_id,timestamp\n" + rows))
    split = holdout_split(log, test_fraction=0.2, seed=0)
    assert split.strategy == "leave_last_out"
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
