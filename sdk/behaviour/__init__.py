"""Behaviour signals on the device: the bundle's popularity, co-occurrence neighbours and
collaborative vectors (:mod:`.model`), laid out over a catalog (:mod:`.index`), and the feed
that ranks candidates from several sources by their fused features (:mod:`.feed`)."""

from __future__ import annotations

from edgerec.sdk.behaviour.feed import (
    DEFAULT_FUSION,
    FEATURES,
    SOURCES,
    FeedCandidates,
    FeedOptions,
    FeedRanking,
    UserHistory,
    contributions,
    feature_rows,
    feed_candidates,
    fuse,
    rank_feed,
    user_factors,
    user_history,
)
from edgerec.sdk.behaviour.index import BehaviourIndex
from edgerec.sdk.behaviour.model import BehaviourModel, load_behaviour

__all__ = [
    "DEFAULT_FUSION",
    "FEATURES",
    "SOURCES",
    "BehaviourIndex",
    "BehaviourModel",
    "FeedCandidates",
    "FeedOptions",
    "FeedRanking",
    "UserHistory",
    "contributions",
    "feature_rows",
    "feed_candidates",
    "fuse",
    "load_behaviour",
    "rank_feed",
    "user_factors",
    "user_history",
]
