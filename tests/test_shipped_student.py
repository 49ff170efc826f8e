"""The student shipped in ``examples/models/`` (issue 15 item 1): its files verify, and on the
sample's held-out photos (clothing-small validation, which its export never trained on) it
ranks same-label neighbours better than the teacher it was distilled from."""

import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE
from edgerec.sdk import Bundle, Encoder, EncoderOptions
from edgerec.sdk.bundle.manifest import Precision
from edgerec.sdk.evaluation.retrieval import label_retrieval

STUDENT = ROOT / "examples" / "models" / "clothing-student"


def _held_out():
    import csv

    with open(SAMPLE / "held_out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [SAMPLE / r["path"] for r in rows], [r["label"] for r in rows]


def test_the_shipped_student_verifies_every_file_it_lists():
    bundle = Bundle.open(STUDENT)  # checks every listed file's sha256 and the encoder_id
    assert bundle.manifest.metrics["quality"]
    done = subprocess.run([sys.executable, "-m", "edgerec.sdk.cli", "bundle", "verify",
                           str(STUDENT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_the_shipped_student_beats_the_teacher_on_held_out_sample_photos(teacher_bundle,
                                                                         precision):
    paths, labels = _held_out()
    student = Bundle.open(STUDENT)
    if not any(a.precision is precision for a in student.manifest.artifacts):
        pytest.skip(f"the shipped student has no {precision.value} encoder")
    with Encoder.create_from_bundle(student, EncoderOptions(precision=precision.value,
                                                            num_threads=2)) as enc:
        ours = label_retrieval(enc.embed(paths), labels, k=10)
    with Encoder.create_from_bundle(teacher_bundle, EncoderOptions(num_threads=2)) as enc:
        theirs = label_retrieval(enc.embed(paths), labels, k=10)
    assert ours.map_at_k > theirs.map_at_k + 0.05, (ours, theirs)
