"""A TFLite model with another of its tensors as the output: a classifier's pooled features as
a teacher.

A classifier (e.g. the shipped MobileNetV2, whose output is ImageNet class probabilities)
computes a pooled feature vector just before its classification layer, and that vector is a
far better embedding than the probabilities. :func:`with_output` writes a copy of the model
whose subgraph output is the named tensor instead: the one int32 of the flatbuffer's
``SubGraph.outputs`` vector is overwritten in place, so nothing else in the file moves; the
runtime then keeps that tensor's memory and returns it (the later ops still run).

Only the fields needed for that are read (the TFLite schema: ``Model.subgraphs`` is field 2,
``SubGraph.tensors`` 0 and ``outputs`` 2, ``Tensor.name`` 3).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Union

from edgerec.export.errors import ExportError
from edgerec.sdk.files import atomic_write_bytes

__all__ = ["tensor_names", "with_output"]

PathLike = Union[str, os.PathLike]


def _u32(buf: bytes, at: int) -> int:
    return struct.unpack_from("<I", buf, at)[0]


def _field(buf: bytes, table: int, index: int) -> int:
    """Absolute position of field ``index`` of the table at ``table`` (0: absent)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index >= size:
        return 0
    offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + offset if offset else 0


def _vector(buf: bytes, table: int, index: int) -> tuple[int, int]:
    """(position of the first element, length) of the vector field ``index``."""
    at = _field(buf, table, index)
    if not at:
        return 0, 0
    vec = at + _u32(buf, at)
    return vec + 4, _u32(buf, vec)


def _subgraph(buf: bytes) -> int:
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ExportError("not a TFLite model (no TFL3 identifier)")
    model = _u32(buf, 0)
    first, count = _vector(buf, model, 2)
    if count < 1:
        raise ExportError("the TFLite model has no subgraph")
    return first + _u32(buf, first)


def tensor_names(buf: bytes) -> list[str]:
    """The names of the main subgraph's tensors, by index."""
    sub = _subgraph(buf)
    first, count = _vector(buf, sub, 0)
    names = []
    for i in range(count):
        tensor = first + 4 * i + _u32(buf, first + 4 * i)
        at = _field(buf, tensor, 3)
        if not at:
            names.append("")
            continue
        s = at + _u32(buf, at)
        names.append(buf[s + 4 : s + 4 + _u32(buf, s)].decode("utf-8", "replace"))
    return names


def with_output(source: PathLike, tensor: str, out: PathLike) -> Path:
    """Write ``source`` to ``out`` with the tensor named ``tensor`` as its only output.

    Raises:
        ExportError: not a TFLite model, no tensor of that name, or a model with more than one
            output.
    """
    buf = bytearray(Path(source).read_bytes())
    names = tensor_names(bytes(buf))
    if tensor not in names:
        close = [n for n in names if tensor.lower() in n.lower()][:5]
        raise ExportError(f"{Path(source).name} has no tensor named {tensor!r}"
                          + (f"; similar: {close}" if close else "") + ".")
    first, count = _vector(bytes(buf), _subgraph(bytes(buf)), 2)
    if count != 1:
        raise ExportError(f"{Path(source).name} has {count} outputs; expected one to replace.")
    struct.pack_into("<i", buf, first, names.index(tensor))
    out = Path(out)
    atomic_write_bytes(out, bytes(buf))
    return out
