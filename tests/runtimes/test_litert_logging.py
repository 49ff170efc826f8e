"""LiteRT's native INFO line is held back; its warnings and errors still reach stderr.

The line is printed by LiteRT's C++ logger straight to file descriptor 2, once per process, so
each check runs in a fresh Python process and reads that process's real stderr.
"""

import os
import subprocess
import sys

from conftest import ROOT, TEACHER

XNNPACK_INFO = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def _python(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "EDGEREC_LITERT_LOG": "", **(env or {})},
    )


_ENCODE = f"""
import sys
from pathlib import Path
import tempfile
from edgerec.sdk import Encoder, EncoderOptions, Engine, ImportOptions, import_model

with tempfile.TemporaryDirectory() as tmp:
    import_model([Path({str(TEACHER)!r})], Path(tmp) / "b", ImportOptions(raw_pixels=True))
    opts = EncoderOptions(engine=Engine.TFLITE, num_threads=1)
    with Encoder.create_from_bundle_path(Path(tmp) / "b", opts) as encoder:
        vector = encoder.embed([Path({str(ROOT / "examples/sample/images")!r})
                                .glob("*/*.jpg").__next__()])
print(vector.shape)
"""


def test_encoder_on_a_litert_artifact_does_not_print_the_xnnpack_info_line():
    done = _python(_ENCODE)
    assert done.returncode == 0, done.stderr
    assert "(1, " in done.stdout
    assert XNNPACK_INFO not in done.stderr
    assert "INFO:" not in done.stderr


def test_the_xnnpack_info_line_comes_back_when_asked_for():
    code = (f"from edgerec.runtimes.litert import LiteRtRuntime\n"
            f"LiteRtRuntime({str(TEACHER)!r}).close()\n")
    assert XNNPACK_INFO not in _python(code).stderr
    assert XNNPACK_INFO in _python(code, env={"EDGEREC_LITERT_LOG": "1"}).stderr


def test_native_errors_written_while_quiet_still_reach_stderr_in_order():
    code = """
import os, sys
from edgerec.runtimes.litert import quiet_native_stderr
print("before", file=sys.stderr)
try:
    with quiet_native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
        os.write(2, b"ERROR: Didn't find op for builtin opcode 'FOO'\\n")
        raise ValueError("model refused")
except ValueError:
    print("raised", file=sys.stderr)
with quiet_native_stderr():
    os.write(2, b"WARNING: something native\\n")
os.write(2, b"after\\n")
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "before",
        "ERROR: Didn't find op for builtin opcode 'FOO'",
        "raised",
        "WARNING: something native",
        "after",
    ]


def test_a_model_litert_cannot_load_still_raises_a_model_error_after_the_redirect():
    code = """
import os, sys
from edgerec.runtimes.litert import LiteRtRuntime
from edgerec.sdk.errors import ModelError
try:
    LiteRtRuntime(b"TFL3" + bytes(64))
except ModelError as exc:
    print("ModelError:", exc, file=sys.stderr)
os.write(2, b"fd 2 restored\\n")
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "ModelError: LiteRT could not load" in done.stderr
    assert done.stderr.rstrip().endswith("fd 2 restored")


def test_litert_runtimes_opened_from_several_threads_all_load_and_stderr_is_restored():
    code = f"""
import os, threading
from edgerec.runtimes.litert import LiteRtRuntime, quiet_native_stderr
errors = []
def work():
    try:
        LiteRtRuntime({str(TEACHER)!r}).close()
    except Exception as exc:
        errors.append(exc)
threads = [threading.Thread(target=work) for _ in range(4)]
with quiet_native_stderr():  # nested use does not deadlock
    LiteRtRuntime({str(TEACHER)!r}).close()
[t.start() for t in threads]
[t.join() for t in threads]
os.write(2, b"restored\\n")
print(len(errors))
"""
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr
    assert done.stderr.splitlines() == ["restored"]


def test_open_interpreter_reads_a_model_quietly_and_leaves_unreadable_files_to_the_caller():
    code = f"""
from edgerec.runtimes.litert import open_interpreter
it = open_interpreter({str(TEACHER)!r})
print(len(it.get_tensor_details()) > 0, len(it._get_ops_details()) > 0)
try:
    open_interpreter({str(ROOT / "README.md")!r})
except (ValueError, RuntimeError):
    print("refused")
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "refused"]
    assert "INFO:" not in done.stderr
