"""The export's commands through ``edgerec``: ``convert`` prints what it measured and the
import line that puts both files in one bundle."""

import json
import shlex

from conftest import TEACHER
from edgerec.sdk.bundle import Bundle
from edgerec.sdk.cli.app import main


def test_convert_then_its_import_line_makes_a_two_engine_bundle(tmp_path, capsys):
    out = tmp_path / "teacher.onnx"
    assert main(["convert", str(TEACHER), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["min_cosine"] >= 0.9999 and result["probe_kind"] == "synthetic"
    assert result["weights"] == ("uint8" if result["target"] == "x86-avx2" else "int8")
    words = shlex.split(result["import_command"].replace("BUNDLE", str(tmp_path / "b")))
    assert words[:3] == ["edgerec", "bundle", "import"]
    assert main(words[1:]) == 0
    keys = {a.key for a in Bundle.open(tmp_path / "b").manifest.artifacts}
    assert keys == {"encoder/tflite/int8", "encoder/onnx/int8"}


def test_convert_errors_are_one_line(tmp_path, capsys):
    code = main(["convert", str(TEACHER), "--out", str(tmp_path / "t.onnx"),
                 "--min-cosine", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "min_cosine" in err
    assert not (tmp_path / "t.onnx").exists()
