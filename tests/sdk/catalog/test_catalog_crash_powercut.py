"""Power cuts (issue 16): a cut after any fsync, commit or rename of a catalog writer, or inside
SQLite's commits and checkpoints, with every write not yet fsynced dropped (or part of SQLite's),
leaves a catalog that opens at a committed generation holding every returned step
(``powercut_disk.py`` says what a cut keeps; ``benchmarks/crash_faults.py`` runs longer)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import powercut_disk
import pytest

_spec = importlib.util.spec_from_file_location(
    "catalog_crash_powercut", Path(__file__).with_name("catalog_crash_powercut.py"))
powercut = importlib.util.module_from_spec(_spec)
sys.modules["catalog_crash_powercut"] = powercut  # its dataclasses look their module up
_spec.loader.exec_module(powercut)

pytestmark = pytest.mark.skipif(not powercut_disk.sqlite_reachable(),
                                reason="the power-cut shim needs SQLite's VFS (Linux, shared "
                                       "libsqlite3)")


def test_a_power_cut_at_any_event_leaves_a_committed_generation(tmp_path):
    result = powercut.run(tmp_path, 12)  # add, update, remove and 3 compactions
    assert result["faults"] == []
    assert result["cuts_checked"] == result["events"] > 150
    events = result["by_event"]
    assert events["commit"] >= 12 and events["fsync"] >= 24 and events["journal"] >= 24
    assert events["sqlite-sync"] >= 12 and events["torn"] == events["sectors"] >= 12


def test_the_harness_catches_a_segment_folder_not_fsynced_before_the_commit(tmp_path,
                                                                           monkeypatch):
    from edgerec.sdk.catalog import writer

    monkeypatch.setattr(writer, "fsync_dir", lambda *args, **kwargs: None)
    result = powercut.run(tmp_path, 6)
    assert result["faults"], "dropping the folder fsync must lose a committed segment"
    assert any("is missing" in f for f in result["faults"])


def test_the_harness_catches_commits_that_sqlite_does_not_fsync(tmp_path, monkeypatch):
    """With ``synchronous=NORMAL`` a WAL commit returns before its frames are fsynced: the
    cuts after it must lose a returned step (the VFS sees SQLite's own writes and fsyncs)."""
    monkeypatch.setattr(powercut_disk.Connection, "rewrites",
                        {"PRAGMA synchronous=FULL": "PRAGMA synchronous=NORMAL"})
    result = powercut.run(tmp_path, 6)
    assert any("no committed state" in f for f in result["faults"]), result["faults"][:3]
