"""Power cuts for the profile store (issue 16): a cut at any event of a record/forget schedule,
inside SQLite's commits and checkpoints included, leaves a file that opens with
``integrity_check`` ok at a committed state no older than SQLite's last fsync, and never brings
back a byte of a user whose ``forget`` returned (``profile_crash_powercut.py`` says what is
checked, ``powercut_disk.py`` what a cut keeps; ``benchmarks/crash_faults.py`` runs longer)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import powercut_disk
import pytest

_spec = importlib.util.spec_from_file_location(
    "profile_crash_powercut", Path(__file__).with_name("profile_crash_powercut.py"))
powercut = importlib.util.module_from_spec(_spec)
sys.modules["profile_crash_powercut"] = powercut
_spec.loader.exec_module(powercut)

pytestmark = pytest.mark.skipif(not powercut_disk.sqlite_reachable(),
                                reason="the power-cut shim needs SQLite's VFS (Linux, shared "
                                       "libsqlite3)")


def test_a_power_cut_never_corrupts_profiles_nor_brings_a_forgotten_user_back(tmp_path):
    # 24 steps: 20 records and 4 forgets. Before forget fsynced the WAL it had truncated, a
    # cut inside the next record's first WAL write could bring the old frames (with the
    # forgotten user's rows) back into profiles.sqlite-wal (3 cuts of these 124).
    result = powercut.run(tmp_path, 24)
    assert result["faults"] == []
    assert result["forgets"] == 4 and result["cuts_checked"] == result["events"] > 100
    events = result["by_event"]
    assert events["commit"] == 24 and events["torn"] == events["sectors"] >= 24
    assert result["rolled_back"] > 0, "synchronous=NORMAL: some cuts lose returned records"


def test_a_forget_that_does_not_fsync_the_truncated_wal_is_caught(tmp_path, monkeypatch):
    """The bug the first test guards against, planted back: SQLite truncates the WAL without
    an fsync, and a cut before the file system commits the new length restores the old
    frames."""
    from edgerec.sdk import profile

    monkeypatch.setattr(profile, "_fsync_if_exists", lambda path: None)
    result = powercut.run(tmp_path, 24)
    assert any("still in the file's bytes" in f for f in result["faults"]), result["faults"][:3]
