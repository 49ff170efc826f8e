"""The export's own reads of a ``.tflite`` file (the MAC count, ``--student-init``'s weights,
``edgerec convert``) hold back LiteRT's native INFO line like the runtime does.

The line is printed once per process straight to file descriptor 2, so each read runs in a
fresh Python process and the test reads that process's real stderr.
"""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, TEACHER

READS = {
    "macs": "from edgerec.export.artifacts.macs import tflite_macs\n"
            f"print(tflite_macs({str(TEACHER)!r}))",
    "student_init": "from edgerec.export.distill.tflite_weights import read_convolutions\n"
                    f"print(len(read_convolutions({str(TEACHER)!r})[0]))",
    "convert": "import tempfile, pathlib\n"
               "from edgerec.sdk.cli.app import main\n"
               "with tempfile.TemporaryDirectory() as tmp:\n"
               f"    print(main(['convert', {str(TEACHER)!r}, '--out', "
               "str(pathlib.Path(tmp) / 't.onnx'), '--json']))",
}


@pytest.mark.parametrize("read", sorted(READS))
def test_reading_a_tflite_file_in_the_export_prints_no_litert_info_line(read):
    done = subprocess.run([sys.executable, "-c", READS[read]], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "EDGEREC_LITERT_LOG": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the read answered
    assert "INFO:" not in done.stderr
