"""Power cuts (issue 16): a cut after any fsync or commit of a catalog writer, with every write
not yet fsynced dropped, leaves a catalog that opens at a committed generation
(``catalog_crash_powercut.py`` says what it models; ``benchmarks/crash_faults.py`` runs longer)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "catalog_crash_powercut", Path(__file__).with_name("catalog_crash_powercut.py"))
powercut = importlib.util.module_from_spec(_spec)
sys.modules["catalog_crash_powercut"] = powercut  # its dataclasses look their module up
_spec.loader.exec_module(powercut)


def test_a_power_cut_at_any_fsync_or_commit_leaves_a_committed_generation(tmp_path):
    result = powercut.run(tmp_path, 12)  # add, update, remove and 3 compactions
    assert result["faults"] == []
    assert result["cuts_checked"] == result["events"] > 50
    assert result["by_event"]["commit"] >= 12 and result["by_event"]["fsync"] >= 24


def test_the_harness_catches_a_segment_folder_not_fsynced_before_the_commit(tmp_path,
                                                                           monkeypatch):
    from edgerec.sdk.catalog import writer

    monkeypatch.setattr(writer, "fsync_dir", lambda *args, **kwargs: None)
    result = powercut.run(tmp_path, 6)
    assert result["faults"], "dropping the folder fsync must lose a committed segment"
    assert any("is missing" in f for f in result["faults"])
