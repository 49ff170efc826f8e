"""The gated ladder of int8 remedies, for any model role.

:func:`quantize_with_ladder` builds and measures :class:`Remedy` rungs in order, cheapest
first, until one passes a :class:`Gate`; it records every attempt (its parity report and the
gate checks it fell short of) and, when none passes, raises :class:`LadderFailedError` (an
``ExportError``) naming the artifact, the best attempt and its shortfall, and carrying every
attempt for the export's records. A gate is anything
with ``shortfalls(report)`` and ``margin(report)`` over the role's parity report: the
encoder's :class:`~edgerec.export.artifacts.encoder.EncoderGate` (embedding mAP ratio and
cosine) and the scorer's :class:`~edgerec.export.scorer.artifacts.ScorerGate` (top-k overlap,
rank correlation, NDCG ratio). The rung lists live beside each role.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Optional,
    Protocol,
    TypeVar,
    Union,
    runtime_checkable,
)

from edgerec.export.errors import ExportError

if TYPE_CHECKING:
    from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions
    from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions

__all__ = [
    "Attempt",
    "Gate",
    "LadderFailedError",
    "LadderResult",
    "Remedy",
    "Report",
    "quantize_with_ladder",
    "remedies_from",
]


class Report(Protocol):
    """A parity report of one artifact against its fp32 reference (JSON-ready)."""

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Report)
R_contra = TypeVar("R_contra", bound=Report, contravariant=True)


@runtime_checkable
class Gate(Protocol[R_contra]):
    """What an int8 artifact's parity report must reach (``isinstance`` checks that both
    methods exist)."""

    def shortfalls(self, report: R_contra) -> dict[str, tuple[Optional[float], float]]:
        """``{metric: (value, required)}`` for every check ``report`` fails (empty: passes);
        ``value`` is ``None`` when a required metric was not measured."""
        ...

    def margin(self, report: R_contra) -> float:
        """The worst (value - required) over the checks; >= 0 when ``report`` passes."""
        ...


@dataclass(frozen=True)
class Remedy:
    """One rung of the ladder.

    Attributes:
        name: recorded in the attempts and the bundle (e.g. ``"percentile"``).
        options: quantization options the ladder's ``build`` uses for this rung.
        build: a builder for this rung alone (e.g. quantization-aware fine-tuning supplied by
            the training code); when set it replaces the ladder's ``build``.
    """

    name: str
    options: Union[OnnxQuantOptions, TfliteQuantOptions, None] = None
    build: Optional[Callable[[Remedy], Path]] = field(default=None, compare=False)


def remedies_from(base, steps: Sequence[tuple[str, dict[str, Any]]]) -> list[Remedy]:
    """One :class:`Remedy` per ``(name, changes)`` step, its options ``base`` with the changes
    (``dataclasses.replace``)."""
    return [Remedy(name, replace(base, **changes)) for name, changes in steps]


Shortfalls = dict[str, tuple[Optional[float], float]]
"""``{metric: (value, required)}``: the checks of a :class:`Gate` that a report fails."""


@dataclass(frozen=True)
class Attempt(Generic[R]):
    """One tried remedy: its artifact, parity and the gate checks it fell short of (empty when
    it passed), or the error that stopped it (``report`` and ``shortfalls`` then ``None``)."""

    remedy: str
    passed: bool
    artifact: Optional[Path] = None
    report: Optional[R] = None
    error: Optional[str] = None
    shortfalls: Optional[Shortfalls] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``artifact`` is the file name only, ``shortfalls`` is
        ``{metric: {"value": v, "required": r}}``."""
        short = None if self.shortfalls is None else {
            m: {"value": v, "required": need} for m, (v, need) in self.shortfalls.items()}
        return {"remedy": self.remedy, "passed": self.passed,
                "artifact": None if self.artifact is None else self.artifact.name,
                "report": None if self.report is None else self.report.to_dict(),
                "error": self.error, "shortfalls": short}


@dataclass(frozen=True)
class LadderResult(Generic[R]):
    """The artifact that passed, the remedy that made it, and every attempt up to it."""

    artifact: Path
    remedy: str
    attempts: tuple[Attempt[R], ...]

    @property
    def report(self) -> R:
        """The passing attempt's parity report."""
        report = self.attempts[-1].report
        if report is None:
            raise ValueError("the last attempt of a LadderResult has no report.")
        return report

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the bundle manifest's ``metrics["quantization"]`` entries):
        ``{"remedy", "passed": True, "attempts"}``."""
        return {"remedy": self.remedy, "passed": True,
                "attempts": [a.to_dict() for a in self.attempts]}


class LadderFailedError(ExportError):
    """No rung of a ladder passed its gate (or none could be built).

    Attributes:
        artifact: what was being built (e.g. ``"encoder.int8.onnx"``).
        attempts: every rung tried, in order, none passed.
        best: the measured attempt nearest to passing (largest gate margin); ``None`` when no
            rung could be built.
    """

    def __init__(self, message: str, artifact: str, attempts: Sequence[Attempt[Any]],
                 best: Optional[str]) -> None:
        super().__init__(message)
        self.artifact = artifact
        self.attempts = tuple(attempts)
        self.best = best

    def to_dict(self) -> dict[str, Any]:
        """The failed ladder's record, shaped as :meth:`LadderResult.to_dict`:
        ``{"remedy": None, "passed": False, "best", "attempts"}``."""
        return {"remedy": None, "passed": False, "best": self.best,
                "attempts": [a.to_dict() for a in self.attempts]}


def _describe_shortfall(gate: Gate[R], report: R) -> str:
    parts = []
    for metric, (value, need) in gate.shortfalls(report).items():
        if value is None:
            parts.append(f"{metric} not measured (needs >= {need})")
        else:
            parts.append(f"{metric} {value:.4f} < {need} (short by {need - value:.4f})")
    return "; ".join(parts)


def _failure(artifact: str, attempts: Sequence[Attempt[R]], gate: Gate[R]) -> LadderFailedError:
    """The error for a ladder whose every rung failed: the best attempt and its shortfall."""
    tried = ", ".join(a.remedy for a in attempts)
    measured = [a for a in attempts if a.report is not None]
    failures = "; ".join(f"{a.remedy} failed: {a.error}" for a in attempts if a.error)
    if not measured:
        return LadderFailedError(
            f"{artifact}: every quantization remedy failed to build ({failures}).",
            artifact, attempts, None)
    best = max(measured, key=lambda a: gate.margin(a.report))
    message = (f"{artifact} failed the int8 gate after {len(attempts)} remedies ({tried}); "
               f"the best, {best.remedy!r}, reached {_describe_shortfall(gate, best.report)}.")
    if failures:
        message += f" Also: {failures}."
    advice = (" Export the fp32 artifact only, or give the quantization-aware fine-tuning "
              "(the 'qat' rung) more steps or minutes." if any(a.remedy == "qat" for a in attempts)
              else " Export the fp32 artifact only, or train with quantization-aware "
              "fine-tuning.")
    return LadderFailedError(message + advice, artifact, attempts, best.remedy)


def quantize_with_ladder(
    remedies: Sequence[Remedy],
    build: Callable[[Remedy], Path],
    evaluate: Callable[[Path], R],
    gate: Gate[R],
    *,
    artifact: str = "int8 model",
) -> LadderResult[R]:
    """Build and evaluate ``remedies`` in order; stop at the first that passes ``gate``.

    Args:
        remedies: the rungs, cheapest first; a remedy with its own ``build`` uses it.
        build: remedy -> path of the int8 artifact it produced.
        evaluate: artifact path -> the role's parity report against the fp32 reference.
        gate: the role's :class:`Gate` over that report.
        artifact: what is being built, for the error message (e.g. ``"encoder.int8.onnx"``).

    Returns:
        :class:`LadderResult`; its ``attempts`` end with the passing one.

    Raises:
        LadderFailedError: no remedy passed; the message names ``artifact``, the best attempt
            and by how much it fell short (and any remedy that failed to build); the error
            carries every attempt (:meth:`LadderFailedError.to_dict`).
    """
    if not remedies:
        raise ValueError("quantize_with_ladder needs at least one remedy.")
    attempts: list[Attempt[R]] = []
    for remedy in remedies:
        try:
            path = Path((remedy.build or build)(remedy))
            report = evaluate(path)
        except Exception as exc:  # one broken rung must not hide the others' results
            attempts.append(Attempt(remedy.name, False, error=f"{type(exc).__name__}: {exc}"))
            continue
        short = gate.shortfalls(report)
        passed = not short
        attempts.append(Attempt(remedy.name, passed, path, report, shortfalls=short))
        if passed:
            return LadderResult(path, remedy.name, tuple(attempts))
    raise _failure(artifact, attempts, gate)
