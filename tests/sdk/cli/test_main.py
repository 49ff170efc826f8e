"""The edgerec command: help everywhere, JSON where scripts parse, clean errors."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import SAMPLE, TEACHER
from edgerec.sdk.cli.app import build_parser, main


def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_command_and_option_has_help_text():
    for path, parser in _walk(build_parser()):
        assert parser.description, f"edgerec {' '.join(path)} lacks a description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"edgerec {' '.join(path)} {action.dest} lacks help"
    commands = {" ".join(p) for p, _ in _walk(build_parser())}
    assert {"bundle import", "bundle info", "bundle verify", "embed", "engines"} <= commands


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


def test_no_subcommand_prints_usage_and_exits_2(capsys):
    assert main([]) == 2 and "usage: edgerec" in capsys.readouterr().err
    assert main(["bundle"]) == 2


def test_console_script_runs(tmp_path):
    exe = [sys.executable, "-m", "edgerec.sdk.cli.app", "engines", "--json"]
    result = subprocess.run(exe, capture_output=True, text=True, check=True)
    assert set(json.loads(result.stdout)) == {"onnx", "tflite"}


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
