"""benchmarks/similar_stages.py: the stages of similar() and the whole call, timed in one loop
with the shipped student on the sample's photos."""

import json
import subprocess
import sys

from conftest import ROOT, SAMPLE

STAGES = ["read", "decode", "preprocess", "encode", "search", "sum", "similar", "gap"]


def test_every_stage_and_the_whole_call_are_timed_in_each_iteration(tmp_path):
    out = tmp_path / "stages"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "similar_stages.py"), "--name", str(out),
         "--images", str(SAMPLE / "images"), "--photos", "8", "--items", "2000",
         "--runs", "20", "--warmup", "2"],
        check=True, capture_output=True, text=True, cwd=tmp_path)
    result = json.loads(out.with_suffix(".json").read_text())
    assert list(result["stats"]) == STAGES
    for name, stats in result["stats"].items():
        assert stats["n"] == 20
        if name != "gap":  # a difference of two timings may be negative
            assert 0 < stats["p50"] <= stats["p90"]
    assert result["items"] == 2000 and result["artifact"] == "encoder.fp32.onnx"
    assert result["layout"] in ("columns", "rows")
    assert "| similar |" in out.with_suffix(".md").read_text()
