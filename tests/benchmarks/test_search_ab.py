"""benchmarks/search_ab.py: this checkout against a commit, each side in its own processes."""

import json
import subprocess
import sys

from conftest import ROOT


def test_each_side_imports_its_own_tree_and_both_return_the_same_ids(tmp_path):
    out = tmp_path / "ab"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_ab.py"), "--baseline", "HEAD",
         "--items", "20000", "--batch", "70", "--runs", "10", "--rounds", "2",
         "--name", str(out)],  # 20k rows: over the pre-filter's MIN_ROWS; 70: two groups
        check=True, capture_output=True, text=True, cwd=tmp_path)
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["same_ids"] is True
    assert set(result["results"]) == {"photos", "random"}
    for rows in result["results"].values():
        assert len(rows) == 2
        for row in rows:
            assert row["this"]["prefilter"] == str(ROOT / "sdk")
            assert row["baseline"]["prefilter"] != row["this"]["prefilter"]
            assert row["baseline"]["prefilter"].endswith("/baseline/edgerec/sdk")
            for side in row.values():
                assert side["one_ms"] > 0 and side["batch_s"] > 0 and side["batch_rss_mb"] >= 0
                assert len(side["first_ids"]) == 3 and len(side["first_ids"][0]) == 10
    assert "| photos | one query, p50 ms |" in out.with_suffix(".md").read_text()
