"""Shared benchmark reporting: JSON + Markdown output, and the machine facts, percentiles and
peak RSS (``VmHWM``) that :mod:`edgerec.sdk.bench.machine` collects for ``edgerec bench``,
so both report a machine the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgerec.sdk.bench import machine as _machine
from edgerec.sdk.bench.machine import peak_rss_mb, percentiles

__all__ = ["RESULTS", "machine_info", "parse_value", "peak_rss_mb", "percentiles", "write"]

RESULTS = Path(os.environ.get("EDGEREC_BENCH_RESULTS") or Path(__file__).parent / "results")
"""Where results go: ``benchmarks/results``, or ``$EDGEREC_BENCH_RESULTS`` (tests)."""


def machine_info() -> dict[str, Any]:
    """:func:`edgerec.sdk.bench.machine.machine_info` (date, CPU model, SIMD flags, cores,
    memory, OS, Python, numpy, engine and faiss versions, git commit) with ``machine``, the
    architecture under the name the benchmark results have always used for it."""
    info = _machine.machine_info()
    return {**info, "machine": info["arch"]}


def write(name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md``; returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2) + "\n")
    md.write_text(markdown)
    return js, md


def publish(name: str, payload: dict[str, Any], markdown: str) -> None:
    """:func:`write` both files, then print the Markdown and where the files went."""
    js, md = write(name, payload, markdown)
    print(markdown)
    print(f"wrote {js} and {md}")


def parse_value(text: str) -> Any:
    """A ``--set key=value`` value: int, float, ``a,b`` -> tuple of ints, true/false/none,
    else the text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return tuple(int(x) for x in text.split(","))
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
