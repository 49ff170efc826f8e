"""Power cuts for ``write_bundle`` (issue 16): a cut after any fsync, or any rename, mkdir or
removal with every metadata change so far on disk, leaves no bundle, the last one that returned
or the one in flight (verified, its report whole), or the previous one aside for the next write
to put back (``bundle_crash_powercut.py`` says what is checked, ``powercut_disk.py`` what a cut
keeps; ``benchmarks/crash_faults.py`` runs longer)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "bundle_crash_powercut", Path(__file__).with_name("bundle_crash_powercut.py"))
powercut = importlib.util.module_from_spec(_spec)
sys.modules["bundle_crash_powercut"] = powercut
_spec.loader.exec_module(powercut)


def test_a_power_cut_leaves_no_bundle_or_a_whole_one_with_its_report(tmp_path):
    # Before write_bundle fsynced the subfolders of its temporary directory, a cut after the
    # swap could leave report/ empty in a bundle that verified.
    result = powercut.run(tmp_path, 3)
    assert result["faults"] == []
    assert set(result["found"]) == {"absent", "verified", "aside"}
    assert result["by_event"]["fsync"] >= 15 and result["by_event"]["journal"] >= 15


def test_the_harness_catches_a_bundle_swapped_in_before_its_folder_is_fsynced(tmp_path,
                                                                            monkeypatch):
    from edgerec.sdk.bundle import writer

    monkeypatch.setattr(writer, "fsync_dir", lambda *args, **kwargs: None)
    result = powercut.run(tmp_path, 2)
    assert any("gone after write" in f or "does not verify" in f for f in result["faults"])
