"""benchmarks/feed_encoders.py: the paired feed comparison read against a refit band, on the
tiny network's catalog of the sample and label-driven events."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, behaviour_bundle, label_events, sample_images
from edgerec.sdk import SourceItem, build_catalog

sys.path.insert(0, str(ROOT / "benchmarks"))
from feed_encoders import band_verdict


@pytest.mark.parametrize(("margin", "refits", "expected"), [
    (0.0012, [-0.0005, 0.0010], ("above", -0.0005, 0.0010)),
    (0.0010, [-0.0005, 0.0010], ("within", -0.0005, 0.0010)),
    (-0.0006, [-0.0005, 0.0010], ("below", -0.0005, 0.0010)),
    (-0.0002, [0.0004, 0.0009], ("below", 0.0, 0.0009)),  # a against itself is in the band
    (0.0001, [-0.0004, -0.0001], ("above", -0.0004, 0.0)),
])
def test_band_verdict_places_the_margin_against_the_refits_and_zero(margin, refits, expected):
    assert band_verdict(margin, refits) == expected


def test_the_script_writes_the_band_and_the_verdict(tiny_bundle, tmp_path):
    pairs = sample_images(4)
    items = [(p.stem, lab) for p, lab in pairs]
    events = label_events(tmp_path / "events.csv", items, users=30, per_user=4)
    catalog = tmp_path / "catalog"
    build_catalog(tiny_bundle, catalog, [SourceItem(p.stem, p, {"label": lab})
                                         for p, lab in pairs], dtype="float16")
    side, other = ([str(behaviour_bundle(tiny_bundle, catalog, events, tmp_path / name,
                                         leave_last_out=True, fusion=fusion).path), str(catalog)]
                   for name, fusion in (("linear", "linear"), ("mlp", "mlp")))
    name = "band"
    env = {**os.environ, "EDGEREC_BENCH_RESULTS": str(tmp_path / "results")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "feed_encoders.py"), "--a", *side,
         "--b", *other, "--events", str(events), "--name", name, "--band", "itself", *side],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    payload = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    band = payload["band"]
    assert band["refits"]["itself"]["mean"] == 0.0 and band["refits"]["itself"]["crossed"] == 0
    # b: the same vectors, another fusion: only the device feed can differ, and the band reads it
    margin = payload["margins"]["device"]["NDCG@20"]["mean"]
    assert payload["margins"]["visual_knn"]["NDCG@20"]["mean"] == 0.0
    assert band["margin"] == margin != 0.0 and (band["low"], band["high"]) == (0.0, 0.0)
    assert band["verdict"] == ("above" if margin > 0 else "below")
    assert f"student: {margin:+.4f}, {band['verdict']} the band [+0.0000, +0.0000]" in run.stdout
    assert "| itself | +0.0000 [+0.0000, +0.0000] | 0 | linear |" in run.stdout
    assert "fusion: teacher linear, student mlp." in run.stdout
