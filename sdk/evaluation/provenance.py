"""Which held-out events an evaluation scores, and whether the bundle's scorer trained on any.

The scorer's training records its split (:class:`~edgerec.sdk.bundle.manifest.HoldoutRecord`:
strategy, seed, test fraction, the events file's sha256). :func:`choose_split` takes that
split unless the options ask for another; :func:`check_split` rebuilds the recorded split from
the same events file and counts the held-out ``(user, item)`` pairs here that the scorer's
training saw. Any such pair is a warning (the scorer's numbers would be optimistic); none is a
note, e.g. leave-last-out on a scorer trained around the newest fraction: every
leave-last-out item is among the newest fraction's held-out items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import HoldoutRecord, Role
from edgerec.sdk.evaluation.events import (
    EventLog,
    Holdout,
    SplitProtocol,
    holdout_split,
    strategy_protocol,
)

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "SplitChoice",
    "check_split",
    "choose_split",
    "has_scorer",
    "recorded_holdout",
]

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 0


@dataclass(frozen=True)
class SplitChoice:
    """The split an evaluation makes: ``protocol``, ``seed`` and ``test_fraction`` (the
    fraction protocol's), and where they came from: ``"options"``, ``"bundle"`` (the scorer's
    record) or ``"default"``."""

    protocol: SplitProtocol
    seed: int
    test_fraction: float
    source: str

    def split(self, log: EventLog) -> Holdout:
        return holdout_split(log, test_fraction=self.test_fraction, seed=self.seed,
                             protocol=self.protocol)


def has_scorer(bundle: Bundle) -> bool:
    """An engine artifact or a weights file (the folded numpy path) with role ``scorer``."""
    return bundle.has(Role.SCORER) or bool(bundle.weights(Role.SCORER))


def recorded_holdout(bundle: Bundle) -> Optional[HoldoutRecord]:
    """The split the bundle's scorer trained around, when it has a scorer and records one,
    else the split its behaviour signals were learned around, when it has them."""
    record = bundle.manifest.scorer
    if record is not None and has_scorer(bundle):
        return record.holdout
    behaviour = bundle.manifest.behaviour
    return behaviour.holdout if behaviour is not None and behaviour.shipped else None


def choose_split(bundle: Bundle, log: EventLog, *, protocol: Optional[SplitProtocol],
                 seed: Optional[int], test_fraction: Optional[float],
                 warnings: list[str]) -> SplitChoice:
    """The options' protocol, seed and fraction where given, else the scorer's recorded split,
    else the defaults (leave-last-out when every event has a timestamp, else a seeded random
    fraction of 0.2); appends a warning when the scorer records no split or was trained on
    another events file."""
    record = recorded_holdout(bundle)
    if has_scorer(bundle) and record is None:
        warnings.append(
            "the bundle's scorer does not record its training split (manifest scorer.holdout): "
            "it may have trained on the events held out here, so its numbers may be optimistic; "
            "export the scorer again to record it"
        )
    chosen = SplitChoice(SplitProtocol.LEAVE_LAST_OUT if log.has_timestamps
                         else SplitProtocol.FRACTION, DEFAULT_SEED, DEFAULT_TEST_FRACTION,
                         "default")
    if record is not None:
        recorded = strategy_protocol(record.strategy, record.test_fraction)
        chosen = SplitChoice(recorded, record.seed, record.test_fraction
                             if recorded is SplitProtocol.FRACTION else DEFAULT_TEST_FRACTION,
                             "bundle")
        if record.events_sha256 and record.events_sha256 != log.report.sha256:
            warnings.append(
                f"WARNING: the events file {log.report.path} (sha256 {log.report.sha256[:12]}) is "
                f"not the one the scorer trained on (sha256 {record.events_sha256[:12]}): the "
                "scorer may have trained on events held out here, so its numbers may be "
                "optimistic; evaluate on the training events file"
            )
    given = {"protocol": protocol, "seed": seed, "test_fraction": test_fraction}
    if any(v is not None for v in given.values()):
        chosen = SplitChoice(
            SplitProtocol(protocol) if protocol is not None else chosen.protocol,
            seed if seed is not None else chosen.seed,
            test_fraction if test_fraction is not None else chosen.test_fraction, "options")
    return chosen


def _pairs(side: dict) -> set[tuple[str, str]]:
    return {(user, e.item_id) for user, events in side.items() for e in events}


def check_split(record: Optional[HoldoutRecord], split: Holdout, log: EventLog,
                warnings: list[str]) -> None:
    """Compare ``split`` with the split the scorer recorded (``record``; nothing to do when
    None). The recorded split is rebuilt from ``log`` (unless ``log`` is another file, which
    :func:`choose_split` already warned about); a warning when its sizes are not the recorded
    ones or when a held-out pair here is one the scorer trained on, else a note when the two
    splits differ."""
    if record is None or (record.events_sha256 and record.events_sha256 != log.report.sha256):
        return
    protocol = strategy_protocol(record.strategy, record.test_fraction)
    theirs = holdout_split(log, test_fraction=record.test_fraction, seed=record.seed,
                           protocol=protocol)
    rebuilt, recorded = theirs.describe(), record.to_dict()
    diffs = [f"{key} {recorded[key]!r} recorded, {rebuilt[key]!r} rebuilt"
             for key in ("train_events", "test_events", "test_users")
             if recorded.get(key) and recorded[key] != rebuilt[key]]
    if diffs:
        warnings.append("the scorer's split rebuilt from this events file is not the one it "
                        "recorded (" + "; ".join(diffs) + "): its numbers may be optimistic")
    held = _pairs(split.test)
    leaked = held & _pairs(theirs.train)
    described = (f"{record.strategy}, seed {record.seed}, test fraction {record.test_fraction}")
    if leaked:
        warnings.append(
            f"WARNING: {len(leaked)} of {len(held)} held-out (user, item) pairs here are in the "
            f"scorer's training events (its split: {described}): its numbers are optimistic; "
            "evaluate with the scorer's split (leave out --protocol, --seed and --test-fraction)"
        )
    elif _pairs(theirs.test) != held:
        warnings.append(
            f"note: this split ({split.strategy}) is not the scorer's ({described}), but none "
            "of its held-out (user, item) pairs is in the scorer's training events"
        )
