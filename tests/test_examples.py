"""The quickstart (what `make demo` runs) works on the shipped sample and says what it found."""

import json
import subprocess
import sys

from conftest import ROOT


def test_quickstart_runs_on_the_sample_and_reports_json(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path),
         "--threads", "1", "--json"], capture_output=True, text=True, check=True, cwd=tmp_path)
    result = json.loads(out.stdout)
    assert result["images"] == 200 and result["artifact"] == "encoder/tflite/int8"
    assert result["retrieval"]["precision_at_k"] > 2 * result["chance_precision_at_10"]
    assert len(result["similar_same_label"]) == 3
    assert result["feed"]["user"] and len(result["feed"]["results"]) == 5
    assert "no scorer" in result["feed"]["note"]
