"""The device SDK must not pull in torch, onnx or tensorflow (nor an engine at import)."""

import json
import subprocess
import sys

HEAVY = ["torch", "torchvision", "onnx", "tensorflow", "litert_torch", "jax",
         "onnxruntime", "ai_edge_litert"]


def test_importing_the_sdk_loads_no_heavy_framework():
    code = (
        "import sys, json, edgerec.sdk, edgerec.sdk.cli.app, edgerec.runtimes; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
