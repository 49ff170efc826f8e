"""The quickstart (what `make demo` runs) works on the shipped sample and says what it found."""

import json
import subprocess
import sys

from conftest import ROOT, SAMPLE


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


def _example(name, *args, cwd):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)],
                         capture_output=True, text=True, check=True, cwd=cwd)
    return out.stdout.splitlines()


def test_visual_search_and_the_feed_examples_run_on_the_sample(teacher_bundle, tmp_path):
    catalog = tmp_path / "catalog"
    lines = _example("visual_search.py", "--bundle", teacher_bundle.path, "--out", catalog,
                     cwd=tmp_path)
    assert lines[0].endswith("200 added, 0 failed")
    first = lines.index("looks like the photo")
    diverse = lines.index("same label, diverse")
    assert diverse - first - 1 == 5 and len(lines) - diverse - 1 == 5
    labels = {line.split("[")[1].split("]")[0] for line in lines[diverse + 1:]}
    assert len(labels) == 1  # the label filter held
    lines = _example("personalized_feed.py", "--bundle", teacher_bundle.path, "--catalog",
                     catalog, "--profiles", tmp_path / "profiles.sqlite", cwd=tmp_path)
    people = [n for n, line in enumerate(lines) if not line.startswith(" ")]
    assert len(people) == 2 and people[1] - people[0] - 1 == 5
    assert all("you bought" in line for line in lines if line.startswith(" "))


def test_the_raspberry_pi_loop_recommends_from_each_photo_in_a_watched_folder(teacher_bundle,
                                                                               tmp_path):
    catalog, watch = tmp_path / "catalog", tmp_path / "incoming"
    _example("visual_search.py", "--bundle", teacher_bundle.path, "--out", catalog, cwd=tmp_path)
    watch.mkdir()
    photos = sorted((SAMPLE / "images" / "dress").glob("*.jpg"))[:3]
    for p in photos:
        (watch / p.name).write_bytes(p.read_bytes())
    (watch / "zz-half-written.jpg").write_bytes(photos[0].read_bytes()[:100])
    lines = _example("raspberry_pi/camera_loop.py", "--bundle", teacher_bundle.path,
                     "--catalog", catalog, "--watch", watch, "--once", "-k", "3", cwd=tmp_path)
    frames = [json.loads(line) for line in lines]
    assert [f["frame"] for f in frames] == [p.name for p in photos] + ["zz-half-written.jpg"]
    for frame, photo in zip(frames, photos):
        assert frame["results"][0]["item_id"] == photo.stem  # the catalog holds the photo itself
        assert len(frame["results"]) == 3 and frame["ms"] > 0
    assert "error" in frames[-1]  # reported, and the loop went on


def test_the_demo_builds_one_page_with_every_step_on_the_shipped_student(tmp_path):
    """`make demo` without its --quick export (minutes; the export has its own tests): the
    catalog, search, feed, evaluate and bench sections on one page, every image it names
    present."""
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--out", str(out),
                           "--skip-export", "--threads", "1"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    page = out / "index.html"
    assert done.stdout.strip().splitlines()[-1] == str(page)
    text = page.read_text()
    for heading in ("2. Visual search", "3. A personalised feed", "4. <code>edgerec evaluate",
                    "5. <code>edgerec bench"):
        assert heading in text
    assert "✓ same label" in text and "you bought" in text
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from screenshot_report import missing_references

    assert missing_references(page) == []
