"""The device profile: which encoder engine, precision and thread count is fastest *here*.

``edgerec bench --choose`` measures every encoder artifact of a bundle that passed its export
gates on every installed engine and thread count, and records the timings and the winner per
bundle (keyed by ``encoder_id``) in one JSON file. ``EncoderOptions(engine="auto",
precision="auto")`` (the default) reads it: when the file holds an entry for the bundle's
``encoder_id`` measured on this CPU, the encoder opens the fastest measured artifact that the
options allow (and its thread count when ``num_threads`` is None); otherwise it keeps the fixed
rule (the first installed engine, fp32 before int8).

Where the file lives, first match wins:

1. ``EncoderOptions.device_profile`` / ``edgerec bench --profile PATH``;
2. the environment variable ``EDGEREC_DEVICE_PROFILE``;
3. ``$XDG_CACHE_HOME/edgerec/device-profile.json`` (``~/.cache/edgerec/device-profile.json``).

Format (``format: "edgerec-device-profile"``, ``version: 1``)::

    {"format": "edgerec-device-profile", "version": 1,
     "encoders": {"<encoder_id>": {
         "bundle": "...", "created": "2026-12-05T06:00:00+00:00",
         "machine": {"cpu": "AMD EPYC ...", "arch": "x86_64", "cores": 2},
         "metric": "encode p50 ms, batch 1 (median of round medians)",
         "choice": {"engine": "onnx", "precision": "fp32", "threads": 1},
         "measured": [{"engine": "onnx", "precision": "fp32", "threads": 1, "p50_ms": 2.1,
                       "ratio": 1.0}, ...],
         "left_out": {"encoder/onnx/int8": "failed its export gate: ..."}}}}

Only plain JSON is read (never unpickled); the file is written atomically
(:func:`edgerec.sdk.files.atomic_write_text`), keeping other bundles' entries.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from edgerec.runtimes import Engine
from edgerec.sdk.bundle.manifest import Precision
from edgerec.sdk.errors import OutputError
from edgerec.sdk.files import atomic_write_text

__all__ = [
    "PROFILE_ENV",
    "PROFILE_FORMAT",
    "DeviceProfile",
    "Measurement",
    "ProfileChoice",
    "default_profile_path",
    "machine_identity",
    "read_device_profile",
    "write_device_profile",
]

PROFILE_ENV = "EDGEREC_DEVICE_PROFILE"
"""Environment variable naming the device profile file."""
PROFILE_FORMAT = "edgerec-device-profile"
PROFILE_VERSION = 1

PathLike = Union[str, os.PathLike]


def default_profile_path() -> Path:
    """``$EDGEREC_DEVICE_PROFILE``, else ``$XDG_CACHE_HOME/edgerec/device-profile.json``
    (``~/.cache/edgerec/device-profile.json``)."""
    named = os.environ.get(PROFILE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return root / "edgerec" / "device-profile.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_identity() -> dict[str, Any]:
    """What a profile must match to be used: CPU model, architecture and core count."""
    return {"cpu": _cpu_model(), "arch": platform.machine(), "cores": os.cpu_count()}


@dataclass(frozen=True)
class Measurement:
    """One measured encoder configuration.

    Attributes:
        engine, precision: the artifact (``encoder/<engine>/<precision>``).
        threads: engine threads.
        p50_ms: encode time of one preprocessed image (batch 1), median of round medians.
        ratio: ``p50_ms`` over the fastest configuration's, taken within each round (median).
    """

    engine: Engine
    precision: Precision
    threads: int
    p50_ms: float
    ratio: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine.value, "precision": self.precision.value,
                "threads": self.threads, "p50_ms": self.p50_ms, "ratio": self.ratio}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(Engine(data["engine"]), Precision(data["precision"]), int(data["threads"]),
                   float(data["p50_ms"]), float(data.get("ratio", 1.0)))


@dataclass(frozen=True)
class ProfileChoice:
    """What the profile picked for one set of constraints."""

    engine: Engine
    precision: Precision
    threads: int
    p50_ms: float


@dataclass(frozen=True)
class DeviceProfile:
    """One bundle's entry of the device profile file (see the module docstring)."""

    encoder_id: str
    measured: tuple[Measurement, ...]
    machine: Mapping[str, Any]
    bundle: str = ""
    created: str = ""
    metric: str = "encode p50 ms, batch 1 (median of round medians)"
    left_out: Mapping[str, str] = field(default_factory=dict)

    @property
    def choice(self) -> Optional[ProfileChoice]:
        """The fastest measured configuration overall."""
        return self.pick()

    def matches_this_machine(self) -> bool:
        """Measured on a CPU of this model, architecture and core count."""
        here = machine_identity()
        return all(self.machine.get(k) == here[k] for k in ("cpu", "arch", "cores"))

    def pick(
        self,
        engines: Optional[Sequence[Engine]] = None,
        precision: Optional[Precision] = None,
        threads: Optional[int] = None,
        available: Optional[Sequence[tuple[Engine, Precision]]] = None,
    ) -> Optional[ProfileChoice]:
        """The fastest measurement allowed by the constraints, or None. Fastest: the lowest
        within-round ratio (robust to a machine that slows down between rounds), then p50.

        Args:
            engines: allowed engines (None: any).
            precision: required precision (None: any).
            threads: required thread count (None: any).
            available: (engine, precision) pairs that can be opened (the bundle's artifacts
                on installed engines); None: any.
        """
        best: Optional[Measurement] = None
        for m in self.measured:
            if engines is not None and m.engine not in engines:
                continue
            if precision is not None and m.precision is not precision:
                continue
            if threads is not None and m.threads != threads:
                continue
            if available is not None and (m.engine, m.precision) not in available:
                continue
            if best is None or (m.ratio, m.p50_ms) < (best.ratio, best.p50_ms):
                best = m
        if best is None:
            return None
        return ProfileChoice(best.engine, best.precision, best.threads, best.p50_ms)

    def to_dict(self) -> dict[str, Any]:
        choice = self.choice
        return {
            "bundle": self.bundle,
            "created": self.created,
            "machine": dict(self.machine),
            "metric": self.metric,
            "choice": None if choice is None else {
                "engine": choice.engine.value, "precision": choice.precision.value,
                "threads": choice.threads, "p50_ms": choice.p50_ms},
            "measured": [m.to_dict() for m in self.measured],
            "left_out": dict(self.left_out),
        }

    @classmethod
    def from_dict(cls, encoder_id: str, data: Mapping[str, Any]) -> DeviceProfile:
        return cls(
            encoder_id=encoder_id,
            measured=tuple(Measurement.from_dict(m) for m in data["measured"]),
            machine=dict(data.get("machine") or {}),
            bundle=str(data.get("bundle", "")),
            created=str(data.get("created", "")),
            metric=str(data.get("metric", cls.metric)),
            left_out={str(k): str(v) for k, v in (data.get("left_out") or {}).items()},
        )


def _read_file(path: Path) -> dict[str, Any]:
    """The whole profile file as a dict (empty when absent); raises ValueError when broken."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ValueError(f"not an {PROFILE_FORMAT} file")
    if int(data.get("version", 0)) > PROFILE_VERSION:
        raise ValueError(f"written by a newer edgerec (version {data.get('version')})")
    if not isinstance(data.get("encoders"), dict):
        raise ValueError("no 'encoders' object")
    return data


def read_device_profile(encoder_id: str, path: Optional[PathLike] = None
                        ) -> Optional[DeviceProfile]:
    """The profile entry for ``encoder_id`` in the file at ``path`` (default:
    :func:`default_profile_path`), or None when there is none.

    A file that cannot be read or parsed gives None and a ``UserWarning`` naming it (an
    encoder must still open: the fixed rule applies); delete it or run ``edgerec bench
    --choose`` again.
    """
    where = Path(path) if path is not None else default_profile_path()
    try:
        data = _read_file(where)
        entry = data.get("encoders", {}).get(encoder_id)
        return None if entry is None else DeviceProfile.from_dict(encoder_id, entry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"ignoring the device profile {where} ({str(exc)[:200]}); delete it or "
                      "run `edgerec bench --choose` again", UserWarning, stacklevel=3)
        return None


def write_device_profile(profile: DeviceProfile, path: Optional[PathLike] = None) -> Path:
    """Add or replace ``profile``'s entry in the file at ``path`` (default:
    :func:`default_profile_path`), atomically; other bundles' entries are kept (a broken file
    is replaced). Returns the path.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    where = Path(path) if path is not None else default_profile_path()
    try:
        data = _read_file(where)
    except (OSError, ValueError):
        data = {}
    encoders = dict(data.get("encoders") or {})
    entry = profile.to_dict()
    if not entry["created"]:
        entry["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    encoders[profile.encoder_id] = entry
    payload = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "encoders": encoders}
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(where, json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the device profile {where} ({exc}); pass --profile "
                          f"with a writable path or set {PROFILE_ENV}") from exc
    return where
