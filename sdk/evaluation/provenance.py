"""Which held-out events an evaluation scores: the split the bundle's scorer recorded
(:class:`~edgerec.sdk.bundle.manifest.ScorerRecord`), so that a scorer is never measured on
events it trained on; warnings where that cannot be guaranteed."""

from __future__ import annotations

from typing import Optional

from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import HoldoutRecord, Role
from edgerec.sdk.evaluation.events import EventLog, Holdout

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "check_split",
    "has_scorer",
    "holdout_params",
    "recorded_holdout",
]

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0


def has_scorer(bundle: Bundle) -> bool:
    """An engine artifact or a weights file (the folded numpy path) with role ``scorer``."""
    return bundle.has(Role.SCORER) or bool(bundle.weights(Role.SCORER))


def recorded_holdout(bundle: Bundle) -> Optional[HoldoutRecord]:
    """The split the bundle's scorer trained around, when it has a scorer and records one."""
    record = bundle.manifest.scorer
    return record.holdout if record is not None and has_scorer(bundle) else None


def holdout_params(bundle: Bundle, log: EventLog, seed: Optional[int],
                   test_fraction: Optional[float], warnings: list[str]
                   ) -> tuple[int, float, str]:
    """``(seed, test_fraction, source)``: the options' where given, else the scorer's recorded
    split, else the defaults; appends a warning wherever the scorer's split cannot be matched."""
    record = recorded_holdout(bundle)
    if has_scorer(bundle) and record is None:
        warnings.append(
            "the bundle's scorer does not record its training split (manifest scorer.holdout): "
            "it may have trained on the events held out here, so its numbers may be optimistic; "
            "export the scorer again to record it"
        )
    chosen_seed, fraction, source = DEFAULT_SEED, DEFAULT_TEST_FRACTION, "default"
    if record is not None:
        chosen_seed, fraction, source = record.seed, record.test_fraction, "bundle"
        if record.events_sha256 and record.events_sha256 != log.report.sha256:
            warnings.append(
                f"WARNING: the events file {log.report.path} (sha256 {log.report.sha256[:12]}) is "
                f"not the one the scorer trained on (sha256 {record.events_sha256[:12]}): the "
                "scorer may have trained on events held out here, so its numbers may be "
                "optimistic; evaluate on the training events file"
            )
    for name, given, recorded in (("seed", seed, chosen_seed),
                                  ("test_fraction", test_fraction, fraction)):
        if given is None:
            continue
        if record is not None and given != recorded:
            warnings.append(
                f"{name} {given} differs from the {recorded} the scorer's split used: the "
                "scorer may have trained on events held out here (drop the option to use its)"
            )
        source = "options"
    return (seed if seed is not None else chosen_seed,
            test_fraction if test_fraction is not None else fraction, source)


def check_split(record: Optional[HoldoutRecord], split: Holdout, warnings: list[str]) -> None:
    """Warn when ``split`` is not the split ``record`` describes."""
    if record is None:
        return
    described = split.describe()
    recorded = record.to_dict()
    diffs = [f"{key} {recorded[key]!r} there, {described[key]!r} here"
             for key in ("strategy", "train_events", "test_events", "test_users")
             if recorded.get(key) and recorded[key] != described[key]]
    if diffs:
        warnings.append("the split differs from the scorer's training split ("
                        + "; ".join(diffs) + "): its numbers may be optimistic")
