"""The behaviour signals learned at export from the events: popularity, co-occurrence
neighbours, collaborative vectors and the image -> collaborative mapping (:mod:`.learn`), the
feed's fusion weights (:mod:`.fusion`), and the bundle's file and record (:mod:`.build`)."""

from __future__ import annotations

from edgerec.export.behaviour.build import BehaviourBuild, build_behaviour
from edgerec.export.behaviour.fusion import fit_fusion, fit_linear, fit_mlp, listwise_regression
from edgerec.export.behaviour.learn import LearnedBehaviour, learn_behaviour

__all__ = [
    "BehaviourBuild",
    "LearnedBehaviour",
    "build_behaviour",
    "fit_fusion",
    "fit_linear",
    "fit_mlp",
    "learn_behaviour",
    "listwise_regression",
]
