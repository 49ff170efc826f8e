"""MobileNetV1 (Howard et al., 2017) as a torchvision-style body, for a student that starts
from the shipped MobileNetV1 teacher's own ImageNet weights.

torchvision has no MobileNetV1; this one has the same layout as its MobileNets (``features``
then ``classifier``), so :class:`~edgerec.export.distill.student.StudentEncoder` and
:func:`~edgerec.export.distill.tflite_weights.load_tflite_body` treat it like the others:
``features`` is a 3x3 stride-2 convolution then 13 depthwise-separable blocks (3x3 depthwise,
1x1 pointwise), each convolution followed by BatchNorm and ReLU6, as in the TFLite graph
(27 convolutions at width 1.0; 1024 channels out).
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

__all__ = ["MobileNetV1", "mobilenet_v1"]

# (output channels, stride) of the 13 depthwise-separable blocks
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _channels(c: int, width: float) -> int:
    """``c * width`` rounded to a multiple of 8 as torchvision's ``_make_divisible`` does."""
    v = c * width
    out = max(8, int(v + 4) // 8 * 8)
    return out + 8 if out < 0.9 * v else out


def _conv(cin: int, cout: int, stride: int, *, depthwise: bool = False) -> nn.Sequential:
    k = 3 if depthwise or cin == 3 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=cin if depthwise else 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 features and a linear classifier.

    Input: (N, 3, S, S) float32. ``features`` output: (N, 1024 * width, S/32, S/32).
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000):
        super().__init__()
        cin = _channels(32, width_mult)
        layers = [_conv(3, cin, 2)]
        for c, stride in _BLOCKS:
            cout = _channels(c, width_mult)
            layers += [_conv(cin, cin, stride, depthwise=True), _conv(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(cin, num_classes))


def mobilenet_v1(weights: Optional[Any] = None, width_mult: float = 1.0) -> MobileNetV1:
    """A randomly initialised :class:`MobileNetV1` (``weights`` must be None: nothing is
    downloaded; ImageNet weights come from a ``.tflite`` on disk, see ``StudentConfig.init``)."""
    if weights is not None:
        raise ValueError("mobilenet_v1 has no downloadable weights; use StudentConfig.init")
    return MobileNetV1(width_mult=width_mult)
