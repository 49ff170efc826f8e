"""The edgerec command: help everywhere, JSON where scripts parse, clean errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLE, TEACHER
from edgerec.sdk.cli.app import main


@pytest.mark.parametrize("argv", [["--help"], ["bundle", "--help"], ["embed", "--help"],
                                  ["bundle", "import", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "usage: edgerec" in capsys.readouterr().out


def test_import_info_verify_embed_round_trip(tmp_path, capsys):
    bundle = tmp_path / "teacher"
    assert main(["bundle", "import", str(TEACHER), "--out", str(bundle), "--raw-pixels",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedding_dim"] == 1024 and info["artifacts"][0]["key"] == "encoder/tflite/int8"
    assert main(["bundle", "info", str(bundle)]) == 0
    assert "encoder/tflite/int8" in capsys.readouterr().out
    assert main(["bundle", "verify", str(bundle), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    out = tmp_path / "vecs.npy"
    images = SAMPLE / "images" / "hat"
    assert main(["embed", "--bundle", str(bundle), str(images), "--out", str(out),
                 "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    vectors = np.load(out, allow_pickle=False)
    assert vectors.shape == (20, 1024) and result["count"] == 20
    listed = out.with_suffix(".paths.txt").read_text().split()
    assert listed == sorted(str(p) for p in images.glob("*.jpg"))


def test_errors_become_a_message_and_exit_code_1(tmp_path, capsys):
    assert main(["bundle", "verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgerec: error: ") and "manifest.json" in err
    assert main(["bundle", "info", str(tmp_path / "nope"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "BundleError"


def test_embed_of_a_corrupt_image_fails_cleanly_and_writes_nothing(teacher_bundle, tmp_path,
                                                                   capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "v.npy"
    assert main(["embed", "--bundle", str(teacher_bundle.path), str(bad), "--out", str(out)]) == 1
    assert "Image 0" in capsys.readouterr().err and not out.exists()


def test_a_command_group_without_its_action_says_so_in_one_line(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["bundle"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose one of import, info, verify" in err


@pytest.mark.parametrize("argv, says", [
    (["catalog", "build"], "the following arguments are required"),
    (["embed", "--threads", "0", "x.jpg", "--out", "v.npy", "--bundle", "b"],
     "--threads: expected a positive integer, got '0'"),
    (["embed", "--batch-size", "-1", "x.jpg", "--out", "v.npy", "--bundle", "b"],
     "--batch-size: expected a positive integer"),
    (["recommend", "-k", "0", "--bundle", "b", "--catalog", "c", "--item", "i"],
     "-k/--k: expected a positive integer"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_a_usage_error_is_one_line_and_exit_code_2(argv, says, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and says in err
    assert err.count("\n") == 1 and "usage:" not in err and "--help" in err


def test_embed_refuses_a_folder_as_out_before_any_work(tmp_path, capsys):
    out = tmp_path / "vectors"
    out.mkdir()
    assert main(["embed", "--bundle", str(tmp_path / "no-bundle"), str(SAMPLE / "images"),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err and "No bundle" not in err  # checked before the bundle opens


def test_console_script_runs(tmp_path):
    exe = [sys.executable, "-m", "edgerec.sdk.cli.app", "engines", "--json"]
    result = subprocess.run(exe, capture_output=True, text=True, check=True)
    assert set(json.loads(result.stdout)) == {"onnx", "tflite"}


# Every engine package, shadowed by one that fails to import (as an absent one does).
_ENGINE_PACKAGES = ("onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow")


def _run_engines_without_any_engine(tmp_path, *flags):
    for name in _ENGINE_PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    exe = [sys.executable, "-m", "edgerec.sdk.cli", "engines", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    return subprocess.run(exe, capture_output=True, text=True, env=env, timeout=120)


def test_engines_fails_with_what_to_install_when_no_engine_imports(tmp_path):
    done = _run_engines_without_any_engine(tmp_path)
    assert done.returncode == 1
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["onnx", "tflite"]
    assert "usable" not in done.stdout.replace("unusable", "")
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("edgerec: error: ")
    assert "pip install 'edgerec[onnx]'" in done.stderr
    assert "pip install 'edgerec[tflite]'" in done.stderr


def test_engines_json_still_lists_the_engines_when_none_is_usable(tmp_path):
    done = _run_engines_without_any_engine(tmp_path, "--json")
    assert done.returncode == 1
    listed = json.loads(done.stdout)
    assert set(listed) == {"onnx", "tflite"}
    assert not any(engine["usable"] for engine in listed.values())
    assert "ONNX Runtime is not installed" in listed["onnx"]["reason"]
    assert "pip install 'edgerec[onnx]'" in done.stderr


def test_engines_exits_zero_with_nothing_on_stderr_when_the_real_engines_work(capsys):
    assert main(["engines", "--json"]) == 0
    captured = capsys.readouterr()
    assert all(engine["usable"] for engine in json.loads(captured.out).values())
    assert captured.err == ""


def test_converter_chatter_is_kept_off_stdout(capfd):
    """`edgerec export --json` prints only JSON: Python- and C-level stdout go to stderr."""
    import os

    from edgerec.sdk.cli.common import stdout_to_stderr

    with stdout_to_stderr():
        print("python-level progress")
        os.write(1, b"c-level progress\n")
    print("result")
    out, err = capfd.readouterr()
    assert out == "result\n"
    assert "python-level progress" in err and "c-level progress" in err
