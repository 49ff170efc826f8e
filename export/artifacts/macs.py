"""Multiply-accumulate counts: of a torch student (hooks) and of a .tflite model (its ops).

Counts convolutions (including depthwise) and fully connected layers, the layers that carry
almost all of a MobileNet's arithmetic; element-wise ops, pooling and activations are left
out on both sides, so the two counts compare like with like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from edgerec.runtimes.litert import open_interpreter
from torch import nn

__all__ = ["tflite_macs", "torch_macs"]


def torch_macs(model: nn.Module, image_size: int) -> int:
    """MACs of one forward pass of ``model`` on a (1, 3, S, S) input."""
    total = 0

    def conv(m: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += int(out.numel() * (m.in_channels // m.groups) * k)

    def linear(m: nn.Linear, _inp, out) -> None:
        nonlocal total
        total += int(out.numel() * m.in_features)

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules()
              if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def tflite_macs(path: Path) -> int:
    """MACs of one ``.tflite`` inference (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED ops)."""
    it = open_interpreter(path)
    shapes = {t["index"]: tuple(t["shape"]) for t in it.get_tensor_details()}
    total = 0
    for op in it._get_ops_details():
        name, ins, outs = op["op_name"], op["inputs"], op["outputs"]
        out = int(np.prod(shapes[outs[0]]))
        w = shapes[ins[1]] if len(ins) > 1 else ()
        if name == "CONV_2D":  # weights (O, kh, kw, I)
            total += out * int(np.prod(w[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C)
            total += out * int(w[1] * w[2])
        elif name == "FULLY_CONNECTED":  # weights (O, I)
            total += out * int(w[1])
    return total
