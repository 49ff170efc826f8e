"""`edgerec bench`: stages per configuration in fresh processes, the scaling table, the files."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLE
from edgerec.sdk.bench import PROFILE_ENV
from edgerec.sdk.bench.machine import peak_rss_mb, percentiles
from edgerec.sdk.bench.report import markdown
from edgerec.sdk.bench.runner import BenchOptions, _ratio, _spawn, _stage, run_bench
from edgerec.sdk.cli.app import main

IMAGES = str(SAMPLE / "images")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-work")


@pytest.fixture(autouse=True)
def _own_profile(tmp_path, monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path / "device-profile.json"))


@pytest.fixture(scope="module")
def result(teacher_bundle, tiny_bundle, work):
    options = BenchOptions.quick(images=(IMAGES,), work=str(work), batches=(1, 2))
    return run_bench([teacher_bundle.path, tiny_bundle.path], options)


def test_every_artifact_and_engine_gets_every_stage_in_its_own_process(result):
    configs = {(c["bundle"], c["artifact"], c["threads"]): c for c in result["configs"]}
    assert set(configs) == {("teacher", "encoder/tflite/int8", 1),
                            ("tiny", "encoder/onnx/fp32", 1), ("tiny", "encoder/tflite/fp32", 1)}
    for cfg in configs.values():
        assert "error" not in cfg, cfg.get("error")
        assert list(cfg["stages"]) == ["decode", "preprocess", "encode_b1", "encode_b2",
                                       "search", "end_to_end"]
        for stats in cfg["stages"].values():
            assert stats["n"] >= 3 and 0 < stats["p50"] <= stats["p99"]
        assert 20 < cfg["peak_rss_mb"] < 2000 and cfg["size_bytes"] > 0
        assert cfg["notes"] == ["no scorer in the bundle: rerank not measured"]
    teacher = configs[("teacher", "encoder/tflite/int8", 1)]
    assert teacher["ratio_encode_b1"] == 1.0  # the baseline
    # The 1024-d uint8 MobileNetV1 costs far more than the 16-d fixture network.
    assert configs[("tiny", "encoder/onnx/fp32", 1)]["ratio_encode_b1"] < 0.5
    # The whole path holds the engine: without it, end to end would be decode + preprocess
    # (a few ms) against the teacher's ~10 ms encode. Compared on the least disturbed runs with
    # a factor of 2 to spare, since the quick profile's few runs all land inside another job's
    # CPU use on a busy machine (a p50 read 19 ms for the engine alone against 14 ms end to
    # end; once even the minima read 21.2 ms against 14.9 ms, beside an export).
    e2e = teacher["stages"]["end_to_end"]["min"]
    assert e2e > 0.5 * teacher["stages"]["encode_b1"]["min"]


def test_the_result_records_the_machine_versions_and_sizes(result):
    m = result["machine"]
    assert m["cores"] >= 1 and m["engines"]["onnx"] and m["numpy"] == np.__version__
    assert isinstance(m["cpu_flags"], list) and "commit" in m
    sizes = {b["label"]: b["artifacts"] for b in result["bundles"]}
    assert sizes["teacher"]["encoder/tflite/int8"] == 3_251_736
    json.dumps(result)  # JSON-ready


def test_the_scaling_table_times_each_kernel_and_faiss_when_installed(result):
    rows = {r["method"]: r for r in result["search"]["rows"]}
    assert set(rows) == {"int8/numpy", "int8/onnxruntime", "float16/numpy", "faiss"}
    for method in ("int8/numpy", "int8/onnxruntime", "float16/numpy"):
        assert rows[method]["kernel"]["n"] >= 3 and rows[method]["search"]["n"] >= 3
    assert rows["int8/onnxruntime"]["layout"] in ("columns", "rows")  # what this CPU chose
    assert "layout" not in rows["int8/numpy"]
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert "faiss-cpu is not installed" in rows["faiss"]["absent"]
    else:
        assert rows["faiss"]["kernel"]["p50"] > 0 and rows["faiss"]["version"]
    assert result["search"]["memory_bandwidth_gbs"] > 0.5


def test_the_markdown_report_has_every_table(result):
    text = markdown(result)
    for heading in ("## Pipeline, batch 1", "## Encode by batch size",
                    "## Catalog search scaling", "## Sizes"):
        assert heading in text
    assert "teacher tflite int8 1t" in text and "faiss" in text


def test_cli_quick_writes_json_markdown_and_png(tiny_bundle, work, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["bench", str(tiny_bundle.path), "--images", IMAGES, "--quick", "--no-search",
                 "--batches", "1", "--work", str(work), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["options"]["batches"] == [1] and printed["search"] == {}
    assert json.loads((out / "bench.json").read_text())["configs"][0]["stages"]
    assert (out / "bench.md").read_text().startswith("# edgerec bench")
    pytest.importorskip("matplotlib")
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_line(tiny_bundle, teacher_bundle, tmp_path, capsys):
    assert main(["bench", str(tiny_bundle.path), str(teacher_bundle.path), "--choose",
                 "--images", IMAGES]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgerec: error: --choose takes one bundle") and "\n" not in err
    assert main(["bench", str(tiny_bundle.path), "--images", str(tmp_path / "none")]) == 1
    assert "neither a photo nor a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tiny_bundle.path), "--images", IMAGES, "--threads", "0"])
    assert info.value.code == 2


def test_a_workers_peak_rss_is_its_own_not_its_parents(work, tmp_path):
    """ru_maxrss would carry this process's high-water mark into the child; VmHWM does not."""
    from edgerec.sdk import Catalog

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB, touched
    assert peak_rss_mb() > 400
    path = tmp_path / "cat"
    with Catalog.create(path, dim=8, encoder_id="x") as cat:
        cat.add([f"i{j}" for j in range(100)], np.eye(100, 8, dtype=np.float32) + 0.1)
    np.save(tmp_path / "q.npy", np.ones((2, 8), np.float32))
    out = _spawn({"kind": "search", "catalog": str(path), "queries": str(tmp_path / "q.npy"),
                  "method": "numpy", "threads": 1, "runs": 3, "warmup": 0,
                  "max_seconds": 1.0}, 1)
    assert out["peak_rss_mb"] < 300, out
    del ballast


def test_percentiles_over_rounds_are_medians_of_round_medians():
    rounds = [{"stages": {"s": [1.0, 2.0, 3.0]}}, {"stages": {"s": [10.0, 10.0, 10.0]}},
              {"stages": {"s": [4.0, 5.0, 6.0]}}]
    base = [{"stages": {"s": [1.0]}}, {"stages": {"s": [5.0]}}, {"stages": {"s": [5.0]}}]
    stats = _stage(rounds, "s")
    assert stats["p50"] == 5.0 and stats["n"] == 9 and stats["min"] == 1.0
    assert stats["p99"] == pytest.approx(percentiles([1, 2, 3, 10, 10, 10, 4, 5, 6])["p99"])
    assert _ratio(rounds, base, "s") == 2.0  # (2/1, 10/5, 5/5): median 2
    assert _stage(rounds, "missing") is None


def test_the_worker_module_runs_as_a_script():
    out = subprocess.run([sys.executable, "-m", "edgerec.sdk.bench.worker"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
