"""The recommender: "more like this" (:meth:`Recommender.similar`) and "for you"
(:meth:`Recommender.for_user`) over a catalog, each result with the reason it was chosen.

::

    with Recommender.create_from_bundle_path("bundle/", "shop.catalog",
                                             profiles="profiles.sqlite") as rec:
        rec.similar(item_id="sku-1", k=10, filters={"label": "shoes"})
        rec.similar("photo.jpg", k=10, diversity=0.3)
        rec.profiles.record("alice", Event("sku-1", EventKind.PURCHASE))
        recs = rec.for_user("alice", k=10)
        recs[0].reason                     # "looks like sku-1 you bought"
        recs.scorer_used, recs.note        # False, "bundle has no scorer: ranked by inner product"

``for_user``: the user vector is the recency- and event-weighted mean of the history's item
vectors (:func:`edgerec.sdk.profile.user_vector`); the catalog gives the exact top
``candidates`` by inner product (filters applied; seen items excluded unless
``exclude_seen=False``; dismissed items always excluded); the bundle's scorer re-ranks them when
it has one (:mod:`edgerec.sdk.scorer`), else the inner product order stands and the result's
``note`` says so. Each result names the history item whose vector is closest to it.

With behaviour signals in the bundle (:mod:`edgerec.sdk.behaviour`: popularity,
co-occurrence neighbours, collaborative vectors, learned at export from the events),
``for_user`` ranks the behaviour feed instead: candidates from visual kNN, the co-occurrence
neighbours of the recent history, collaborative-space kNN and recent-popular, each tagged with
its sources (``Recommendation.sources``), scored by the bundle's fusion of their features; the
reason names the strongest signal ("bought together with sku-1", "people who liked sku-1 liked
this", "looks like sku-1 you bought", "popular this week"). Catalog items the export never saw
(added with ``catalog add``) get a collaborative vector from their photo at once. A bundle
without behaviour signals ranks as before, and ``Recommendations.lacks`` says so.

History items that are not in the catalog (removed since, or from another shop) are ignored
and listed in ``Recommendations.ignored``; a history with no usable item gives an empty result
whose ``note`` says why, so an app can fall back to its own default list.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union, cast, overload

import numpy as np
from edgerec.sdk.behaviour.feed import (
    DEFAULT_FUSION,
    SOURCES,
    FeedOptions,
    UserHistory,
    feed_candidates,
    rank_feed,
    user_history,
)
from edgerec.sdk.behaviour.index import BehaviourIndex
from edgerec.sdk.behaviour.model import BehaviourModel, load_behaviour
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import BehaviourRecord, Role, UserVectorRecipe
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.checks import check_encoder_match
from edgerec.sdk.catalog.matches import Matches
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import CatalogError
from edgerec.sdk.image import ImageInput
from edgerec.sdk.profile import (
    Event,
    EventKind,
    Profile,
    ProfileError,
    ProfileStore,
    event_weights,
    user_vector,
)
from edgerec.sdk.ranking import Candidates, CandidateSource, rank_for_user
from edgerec.sdk.scorer import Scorer, ScorerOptions

__all__ = ["Recommendation", "Recommendations", "Recommender", "RecommenderOptions"]

PathLike = Union[str, os.PathLike]
NO_SCORER_NOTE = "bundle has no scorer: ranked by inner product"
SCORER_OFF_NOTE = "scorer turned off (RecommenderOptions.use_scorer): ranked by inner product"
NOT_SHIPPED_NOTE = ("the export trained a scorer but left it out: it did not beat the inner "
                    "product on validation; ranked by inner product")
FEED_NOTE = ("ranked by the behaviour feed (visual, co-occurrence, collaborative and popular "
             "candidates, fused)")
_PREVIEW = 5


@dataclass(frozen=True)
class RecommenderOptions:
    """How :class:`Recommender` ranks.

    Attributes:
        candidates: C, how many items the exact inner-product search hands to the scorer
            (at least ``k`` are always taken); None: the C the bundle's scorer was gated with
            (:class:`~edgerec.sdk.bundle.manifest.ScorerRecord`), else 500.
        exclude_seen: leave out items the user has any non-dismiss event on.
        half_life_days: an event this much older than the history's newest counts half; None:
            the bundle's recorded user-vector recipe (the one its scorer was trained with),
            else 30.
        event_weights: weight per :class:`EventKind` (or its value), merged over the recipe's
            (default view 0.25, click 0.5, add_to_cart 1, purchase 2, dismiss -1). Negative
            weights subtract the item's vector (push look-alikes down); dismissed items are also
            never returned, whatever their weight. None: the bundle's recorded recipe.
        max_history: only the newest this many events of a history are used.
        use_scorer: re-rank with the bundle's scorer when it has one (and no behaviour feed
            ranks).
        use_behaviour: rank with the bundle's behaviour signals when it has them.
        feed: how many candidates each source of the behaviour feed gives
            (:class:`~edgerec.sdk.behaviour.FeedOptions`; its ``candidates`` is replaced by C).
        scorer: how the scorer runs (:class:`~edgerec.sdk.scorer.ScorerOptions`: the folded
            numpy path or an engine artifact, its precision and threads).
    """

    candidates: Optional[int] = None
    exclude_seen: bool = True
    half_life_days: Optional[float] = None
    event_weights: Optional[Mapping[Any, float]] = field(default=None, hash=False)
    max_history: int = 1000
    use_scorer: bool = True
    scorer: ScorerOptions = field(default_factory=ScorerOptions)
    use_behaviour: bool = True
    feed: FeedOptions = field(default_factory=FeedOptions)

    def __post_init__(self) -> None:
        for name in ("candidates", "max_history"):
            value = getattr(self, name)
            if value is None and name == "candidates":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.half_life_days is not None and (isinstance(self.half_life_days, bool) or not (
            isinstance(self.half_life_days, (int, float)) and 0 < self.half_life_days < float("inf")
        )):
            raise ValueError(f"half_life_days must be a positive number, got {self.half_life_days}")
        if self.event_weights is not None:
            object.__setattr__(self, "event_weights", event_weights(self.event_weights))
        if not isinstance(self.scorer, ScorerOptions):
            raise TypeError(f"scorer must be ScorerOptions, got {self.scorer!r}")


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    ``score``: the behaviour feed's fused score when it ranked, the scorer's logit when
    ``Recommendations.scorer_used``, else the inner product with the query or user vector.
    ``reason``: a sentence for people (``"looks like sku-1 you bought"``); ``because``: the item
    id it names (None for a photo query or a popularity reason). ``sources``: the behaviour
    feed's candidate sources that proposed it (:data:`edgerec.sdk.behaviour.SOURCES`; empty
    without the feed).
    """

    item_id: str
    score: float
    metadata: dict[str, Any]
    reason: str
    because: Optional[str] = None
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"item_id": self.item_id, "score": self.score, "metadata": self.metadata,
               "reason": self.reason, "because": self.because}
        if self.sources:
            out["sources"] = list(self.sources)
        return out


@dataclass(frozen=True, repr=False)
class Recommendations:
    """Recommended items, best first.

    ``scorer_used``: the bundle's scorer ranked them. ``note``: anything the caller should know
    about how they were made (no scorer, ignored history items, no usable history), else "".
    ``ignored``: history item ids that are not in the catalog. ``lacks``: what the bundle or
    the catalog lacks for the full feed (e.g. no behaviour signals), else empty.
    """

    items: tuple[Recommendation, ...]
    scorer_used: bool = False
    note: str = ""
    ignored: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Recommendation: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Recommendation, ...]: ...
    def __getitem__(self, index: int | slice) -> Recommendation | tuple[Recommendation, ...]:
        return self.items[index]

    def __iter__(self) -> Iterator[Recommendation]:
        return iter(self.items)

    @property
    def ids(self) -> list[str]:
        return [r.item_id for r in self.items]

    @property
    def scores(self) -> np.ndarray:
        """``(n,)`` float32 scores, best first."""
        return np.array([r.score for r in self.items], dtype=np.float32)

    def to_list(self) -> list[dict[str, Any]]:
        """``[{"item_id", "score", "metadata", "reason", "because"}, ...]`` (JSON-ready)."""
        return [r.to_dict() for r in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.to_list(), "scorer_used": self.scorer_used, "note": self.note,
                "ignored": list(self.ignored), "lacks": list(self.lacks)}

    def __repr__(self) -> str:
        head = ", ".join(f"{r.item_id!r}: {r.score:.3f}" for r in self.items[:3])
        more = ", ..." if len(self) > 3 else ""
        note = f", note={self.note!r}" if self.note else ""
        return f"Recommendations({len(self)} items: {head}{more}{note})"


_TOKEN = object()


class Recommender:
    """A bundle and a catalog (and optionally a profile store) ready to answer queries.

    Create with :meth:`create_from_bundle` or :meth:`create_from_bundle_path`; close with
    :meth:`close` or a ``with`` block. The image encoder
    is opened on the first photo query; the scorer (when the bundle has one) at creation.
    """

    def __init__(self, token: object, bundle: Bundle, catalog: Catalog,
                 options: RecommenderOptions, encoder_options: EncoderOptions,
                 profiles: Optional[ProfileStore], owned: list[Any]) -> None:
        if token is not _TOKEN:
            raise TypeError("use Recommender.create_from_bundle or create_from_bundle_path")
        self.bundle = bundle
        self.catalog = catalog
        self.options = options
        self.encoder_options = encoder_options
        self.profiles = profiles
        self._owned = owned
        self._encoder: Optional[Encoder] = None
        self._scorer: Optional[Scorer] = None
        self._behaviour: Optional[BehaviourModel] = None
        self._behaviour_record: Optional[BehaviourRecord] = None
        self._index: Optional[tuple[int, BehaviourIndex, np.ndarray, np.ndarray]] = None
        """(generation, the behaviour index over it, each index row's storage row, each
        storage row's index row (-1: none))."""
        self.lacks: tuple[str, ...] = ()
        """What the bundle lacks for the full feed (e.g. behaviour signals), else empty."""
        self._lock = threading.Lock()
        record = bundle.manifest.scorer
        recipe = record.user_vector if record is not None else UserVectorRecipe()
        self.candidates = options.candidates or (record.candidates if record else 500)
        """C: the candidates the scorer re-ranks (the options', else the bundle's record's)."""
        self.half_life_days = (options.half_life_days if options.half_life_days is not None
                               else recipe.half_life_days)
        """The user vector's half-life in days (the options', else the bundle's recipe's)."""
        self.event_weights = event_weights({**event_weights(recipe.event_weights),
                                            **(options.event_weights or {})})
        """Weight per :class:`EventKind` (the options' over the bundle's recipe's)."""

    @classmethod
    def create_from_bundle(
        cls,
        bundle: Bundle,
        catalog: Union[Catalog, PathLike],
        options: RecommenderOptions = RecommenderOptions(),
        encoder_options: Optional[EncoderOptions] = None,
        *,
        profiles: Union[ProfileStore, PathLike, None] = None,
    ) -> Recommender:
        """A recommender over a loaded ``bundle`` and a catalog (opened read-only when given
        as a path).

        Objects passed in open stay the caller's to close; paths are opened and closed here.
        ``encoder_options``: engine, precision and threads of the photo encoder (default
        ``EncoderOptions()``); the scorer runs as ``options.scorer`` says. ``profiles``: a
        :class:`ProfileStore` (or its path) that lets :meth:`for_user` take a user id.

        Raises:
            EncoderMismatchError: the catalog was built with another encoder than the bundle's.
            ArtifactNotFoundError, RuntimeUnavailableError, ModelError: the bundle has a scorer
                that cannot be opened here (it is never skipped silently; pass
                ``RecommenderOptions(use_scorer=False)`` to rank without it).
        """
        if not isinstance(bundle, Bundle):
            raise TypeError("create_from_bundle takes a Bundle; for a path use "
                            "Recommender.create_from_bundle_path")
        owned: list[Any] = []
        try:
            if not isinstance(catalog, Catalog):
                catalog = Catalog.open(catalog, readonly=True)
                owned.append(catalog)
            check_encoder_match(catalog, bundle, "rebuild the catalog with this bundle "
                                "(`edgerec catalog build`), or use the bundle that built it")
            if profiles is not None and not isinstance(profiles, ProfileStore):
                profiles = ProfileStore.open(profiles)
                owned.append(profiles)
            rec = cls(_TOKEN, bundle, catalog, options, encoder_options or EncoderOptions(),
                      profiles, owned)
            if options.use_scorer and bundle.has(Role.SCORER):
                rec._scorer = Scorer.create_from_bundle(bundle, options.scorer)
                owned.append(rec._scorer)
            if options.use_behaviour:
                model, record, lacking = load_behaviour(bundle)
                rec._behaviour, rec._behaviour_record = model, record
                rec.lacks = (lacking,) if lacking else ()
            else:
                rec.lacks = ("behaviour signals turned off (RecommenderOptions.use_behaviour)",)
        except BaseException:
            for obj in reversed(owned):
                obj.close()
            raise
        return rec

    @classmethod
    def create_from_bundle_path(
        cls,
        path: PathLike,
        catalog: Union[Catalog, PathLike],
        options: RecommenderOptions = RecommenderOptions(),
        encoder_options: Optional[EncoderOptions] = None,
        *,
        profiles: Union[ProfileStore, PathLike, None] = None,
    ) -> Recommender:
        """Open (and verify) the bundle at ``path``, then :meth:`create_from_bundle`."""
        return cls.create_from_bundle(Bundle.open(path), catalog, options, encoder_options,
                                      profiles=profiles)

    def close(self) -> None:
        """Close the encoder, the scorer and whatever the constructor opened; idempotent."""
        with self._lock:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None
            while self._owned:
                self._owned.pop().close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        scorer = self._scorer.key if self._scorer else "none"
        return (f"Recommender(bundle={str(self.bundle.path)!r}, "
                f"catalog={str(self.catalog.path)!r}, scorer={scorer})")

    @property
    def has_behaviour(self) -> bool:
        """True when :meth:`for_user` ranks with the bundle's behaviour signals."""
        return self._behaviour is not None

    def behaviour_index(self) -> Optional[BehaviourIndex]:
        """The behaviour signals over the catalog's current generation (rebuilt when the
        catalog changes, so items added since get their collaborative vectors from their
        photos); None without behaviour signals."""
        if self._behaviour is None:
            return None
        generation = self.catalog.generation
        with self._lock:
            if self._index is None or self._index[0] != generation:
                generation, items, storage = self.catalog.item_rows()
                def vectors_of(ids: Sequence[str]) -> np.ndarray:
                    found, vectors = self.catalog.vectors(list(ids))
                    if len(found) != len(ids):  # removed meanwhile: zeros map to the bias
                        by_id = dict(zip(found, vectors))
                        zero = np.zeros(self.catalog.dim, np.float32)
                        return np.stack([by_id.get(i, zero) for i in ids])
                    return vectors
                inverse = np.full(int(storage.max(initial=-1)) + 1, -1, np.int64)
                inverse[storage] = np.arange(len(storage))
                self._index = (generation, BehaviourIndex.build(
                    self._behaviour, items, vectors_of), storage, inverse)
            return self._index[1]

    @property
    def has_scorer(self) -> bool:
        """True when :meth:`for_user` re-ranks with the bundle's scorer."""
        return self._scorer is not None

    def encoder(self) -> Encoder:
        """The bundle's image encoder (opened on first use with ``encoder_options``)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = Encoder.create_from_bundle(self.bundle, self.encoder_options)
            return self._encoder

    # ------------------------------------------------------------------ similar

    def similar(
        self,
        image: Optional[ImageInput] = None,
        k: int = 10,
        *,
        item_id: Optional[str] = None,
        filters: Optional[Mapping[str, Any]] = None,
        exclude: Sequence[str] = (),
        diversity: Optional[float] = None,
    ) -> Recommendations:
        """Items that look like a photo (``image``: path, bytes, file, PIL image, uint8 array)
        or like a catalog item (``item_id``, which is itself never returned).

        ``filters``: metadata conditions in the catalog's filter language
        (:func:`edgerec.sdk.catalog.filters.compile_filters`), e.g. ``{"label": "shoes",
        "price": {"lt": 50}}``; ``exclude``: ids never returned; ``diversity``: MMR trade-off in
        [0, 1] (None or 0: by similarity only). Scores are cosine similarities in [-1, 1]
        (inner products of unit vectors, clipped: a quantized catalog can overshoot 1 slightly).
        To leave the query photo itself out when it is in the catalog, pass its id in
        ``exclude`` (or query by ``item_id``, which excludes itself).

        Raises:
            CatalogError: ``item_id`` is not in the catalog; bad filters, k or diversity.
            InvalidImageError: the photo cannot be used.
        """
        if (image is None) == (item_id is None):
            raise TypeError("similar() takes exactly one of image or item_id")
        excluded = _id_list(exclude, "exclude")
        if item_id is not None:
            query = self.catalog.get(item_id).vector
            excluded.append(item_id)
            reason, because = f"looks like {item_id}", item_id
        else:
            if isinstance(image, str) and not os.path.exists(image) and image in self.catalog:
                raise TypeError(f"{image!r} is an item id, not a photo: pass item_id={image!r}")
            query = self.encoder().embed_one(image)
            reason, because = "looks like your photo", None
        matches = self._search(query, k, filters, excluded, diversity)
        # Cosines of unit vectors, but of a stored int8/float16 copy: a photo against its own
        # stored vector can reach 1.0004. Clipped after ranking, so the order is the search's.
        scores = np.clip(matches.scores, -1.0, 1.0)
        items = tuple(
            Recommendation(m.id, float(score), m.metadata, reason, because)
            for m, score in zip(matches, scores)
        )
        return Recommendations(items)

    # ------------------------------------------------------------------ for_user

    def for_user(
        self,
        history: Union[Profile, Sequence[Event], str],
        k: int = 10,
        *,
        filters: Optional[Mapping[str, Any]] = None,
        exclude: Sequence[str] = (),
    ) -> Recommendations:
        """Items for a person, from their history: a :class:`Profile`, a sequence of
        :class:`Event`, or a user id (needs ``profiles`` at :meth:`create`).

        Returns at most ``k`` items; their reasons name the history item closest to each
        (``"looks like sku-1 you bought"``). See the module docstring for the ranking.

        Raises:
            ProfileError: a user id without a profile store, or a history that is not events.
            CatalogError: bad filters or k.
        """
        index = self.behaviour_index()
        profile, by_id, ignored = self._history(history, index)
        _check_k(k)
        notes = []
        if ignored:
            notes.append(f"ignored {len(ignored)} history item(s) not in the catalog "
                         f"({_preview(ignored)})")
        u = user_vector(profile.events, by_id, half_life_days=self.half_life_days,
                        weights=self.event_weights)
        if u is None:
            why = "the history is empty" if not profile.events else (
                "no history item with a positive event is in the catalog"
            )
            notes.insert(0, f"no usable history ({why}): nothing to recommend")
            return Recommendations((), False, "; ".join(notes), ignored, self.lacks)
        excluded = set(_id_list(exclude, "exclude")) | profile.dismissed
        if self.options.exclude_seen:
            excluded |= profile.seen
        if index is not None:
            return self._feed(profile, by_id, u, index, excluded, filters, int(k), notes,
                              ignored)
        metadata: dict[str, dict[str, Any]] = {}
        source = self._catalog_source(filters, sorted(excluded), metadata)
        score = self._scorer.score if self._scorer is not None else None
        ranking = rank_for_user(u, source, score, k=int(k), candidates=self.candidates)
        if not ranking.reranked:
            notes.insert(0, self._no_scorer_note())
        ids = [str(i) for i in ranking.keys]
        vectors = ranking.candidates.vectors[ranking.order]
        reasons = self._reasons(profile, by_id, vectors, len(ids))
        items = tuple(
            Recommendation(i, float(s), metadata[i], reason, because)
            for i, s, (reason, because) in zip(ids, ranking.scores, reasons)
        )
        return Recommendations(items, ranking.reranked, "; ".join(notes), ignored, self.lacks)

    def _feed(self, profile: Profile, by_id: Mapping[str, np.ndarray], u: np.ndarray,
              index: BehaviourIndex, excluded: set[str], filters: Optional[Mapping[str, Any]],
              k: int, notes: list[str], ignored: tuple[str, ...]) -> Recommendations:
        """``for_user`` with the behaviour feed (:mod:`edgerec.sdk.behaviour.feed`)."""
        metadata: dict[str, dict[str, Any]] = {}
        exclude = sorted(excluded)
        history = user_history(profile.events, index.row, half_life_days=self.half_life_days,
                               weights=self.event_weights)
        banned = np.zeros(len(index), bool)
        banned[[index.row[i] for i in excluded if i in index.row]] = True
        if filters:
            allowed = self.catalog.filter_ids(filters)
            banned |= np.array([i not in allowed for i in index.ids], bool)

        def visual(query: np.ndarray, size: int) -> Candidates:
            """The catalog's search (filters, exclusions); ids and scores only: no vectors,
            no metadata (read below for the k returned)."""
            _check_k(size)
            entry = self._index
            if entry is not None and entry[1] is index:  # storage rows -> index rows
                generation, found_rows, scores = self.catalog.search_rows(
                    query, int(size), filters=filters, exclude=exclude,
                    encoder_id=self.bundle.encoder_id)
                if generation == entry[0]:
                    rows = entry[3][found_rows]
                    live = rows >= 0
                    return Candidates(rows[live], np.zeros((int(live.sum()), 0), np.float32),
                                      scores[live])
            found, scores = self.catalog.search_ids(query, int(size), filters=filters,
                                                    exclude=exclude,
                                                    encoder_id=self.bundle.encoder_id)
            keep = [j for j, i in enumerate(found) if i in index.row]
            rows = np.array([index.row[found[j]] for j in keep], np.int64)
            return Candidates(rows, np.zeros((len(rows), 0), np.float32), scores[keep])

        def visual_of(rows: np.ndarray) -> np.ndarray:
            return self._index_vectors(index, rows)

        feed = replace(self.options.feed, candidates=self.candidates)
        cands = feed_candidates(history, u, index, visual, visual_of, banned, feed)
        record = self._behaviour_record
        fusion = record.fusion if record is not None and record.fusion else DEFAULT_FUSION
        ranking = rank_feed(cands, fusion, k)
        ids = [index.ids[r] for r in ranking.rows]
        missing = [i for i in ids if i not in metadata]
        if missing:
            metadata.update(self.catalog.metadata_of(missing))
        kept = [j for j, i in enumerate(ids) if i in metadata]  # removed meanwhile: dropped
        visual_reasons = self._reasons(profile, by_id,
                                       self._index_vectors(index, ranking.rows[kept]), len(kept))
        items = []
        for j, visual_reason in zip(kept, visual_reasons):
            item, pos = ids[j], int(ranking.order[j])
            reason, because = self._feed_reason(ranking.signals[j], int(cands.cooc_from[pos]),
                                                int(ranking.rows[j]), history, index,
                                                visual_reason)
            bits = int(cands.sources[pos])
            tags = tuple(name for b, name in enumerate(SOURCES) if bits >> b & 1)
            items.append(Recommendation(item, float(ranking.scores[j]), metadata[item], reason,
                                        because, tags))
        notes.insert(0, FEED_NOTE)
        return Recommendations(tuple(items), False, "; ".join(notes), ignored, self.lacks)

    def _index_vectors(self, index: BehaviourIndex, rows: np.ndarray) -> np.ndarray:
        """Image vectors (n, D) float32 of behaviour-index ``rows``: read by storage row (no
        id lookup) while the catalog is at the index's generation, else by id."""
        entry = self._index
        if entry is not None and entry[1] is index:
            vectors = self.catalog.vectors_at(entry[2][np.asarray(rows, np.int64)], entry[0])
            if vectors is not None:
                return vectors
        return self._vectors([index.ids[r] for r in rows])

    def _vectors(self, ids: Sequence[str]) -> np.ndarray:
        found, vectors = (self.catalog.vectors(list(ids)) if ids
                          else ((), np.zeros((0, self.catalog.dim), np.float32)))
        if len(found) == len(ids):
            return vectors
        by_id = dict(zip(found, vectors))
        zero = np.zeros(self.catalog.dim, np.float32)
        return np.stack([by_id.get(i, zero) for i in ids]).reshape(len(ids), self.catalog.dim)

    def _feed_reason(self, signal: str, cooc_from: int, row: int, history: UserHistory,
                     index: BehaviourIndex, visual: tuple[str, Optional[str]]
                     ) -> tuple[str, Optional[str]]:
        """The sentence for the strongest signal of catalog ``row`` (see the module
        docstring); ``visual``: the visual reason, for when pixels are the strongest."""
        if signal == "cooc" and cooc_from >= 0:
            item = index.ids[int(history.rows[cooc_from])]
            kind = history.kinds[cooc_from]
            verb = "bought" if kind is EventKind.PURCHASE else kind.past_tense
            return f"{verb} together with {item}", item
        if signal == "collab" and len(history):
            closest = int(np.argmax(index.collab[history.rows] @ index.collab[row]))
            item = index.ids[int(history.rows[closest])]
            return f"people who liked {item} liked this", item
        if signal == "popularity":
            record = self._behaviour_record
            days = record.popularity_half_life_days if record is not None else 30.0
            when = "this week" if days <= 7 else "this month" if days <= 31 else "lately"
            return f"popular {when}", None
        return visual

    def user_vector(self, history: Union[Profile, Sequence[Event], str]) -> Optional[np.ndarray]:
        """The unit user vector ``(D,)`` float32 that :meth:`for_user` would use (None: no
        usable history)."""
        profile, by_id, _ = self._history(history)
        return user_vector(profile.events, by_id, half_life_days=self.half_life_days,
                           weights=self.event_weights)

    # ------------------------------------------------------------------ helpers

    def _history(
        self, history: Union[Profile, Sequence[Event], str],
        index: Optional[BehaviourIndex] = None,
    ) -> tuple[Profile, dict[str, np.ndarray], tuple[str, ...]]:
        """The newest ``max_history`` events, the vectors of their items that are in the
        catalog (one lookup, by storage row when ``index`` is current), and the ids that
        are not."""
        profile = self._profile(history).newest(self.options.max_history)
        wanted = list(dict.fromkeys(e.item_id for e in profile.events))
        entry = self._index
        if index is not None and entry is not None and entry[1] is index:
            known = [i for i in wanted if i in index.row]
            rows = np.array([index.row[i] for i in known], np.int64)
            vectors = self.catalog.vectors_at(entry[2][rows], entry[0])
            if vectors is not None:
                return (profile, dict(zip(known, vectors)),
                        tuple(i for i in wanted if i not in index.row))
        found, vectors = self.catalog.vectors(wanted) if wanted else ((), None)
        by_id = dict(zip(found, vectors)) if found else {}
        return profile, by_id, tuple(i for i in wanted if i not in by_id)

    def _profile(self, history: Union[Profile, Sequence[Event], str]) -> Profile:
        if isinstance(history, Profile):
            return history
        if isinstance(history, str):
            if self.profiles is None:
                raise ProfileError(
                    "for_user() got a user id but this recommender has no profile store: pass "
                    "profiles= to Recommender.create, or pass the history (events) itself"
                )
            return self.profiles.profile(history, limit=self.options.max_history)
        if isinstance(history, Event):
            return Profile(None, (history,))
        return Profile(None, tuple(history))

    def _catalog_source(self, filters: Optional[Mapping[str, Any]], exclude: Sequence[str],
                        metadata: dict[str, dict[str, Any]]) -> CandidateSource:
        """Stage 1 on the device: the catalog's exact search (filters, exclusions); items
        removed between the search and the vector read drop out; fills ``metadata``."""
        def source(u: np.ndarray, size: int) -> Candidates:
            pool = self._search(u, size, filters, exclude, None)
            ids = list(pool.ids)
            found, vectors = (self.catalog.vectors(ids) if ids
                              else ((), np.zeros((0, self.catalog.dim), np.float32)))
            position = {item: j for j, item in enumerate(ids)}
            keep = [position[i] for i in found]
            metadata.update((ids[j], pool.metadata[j]) for j in keep)
            keys = np.array(found, dtype=object)
            return Candidates(keys, vectors, np.asarray(pool.scores)[keep])
        return source

    def _no_scorer_note(self) -> str:
        record = self.bundle.manifest.scorer
        if self.bundle.has(Role.SCORER):
            return SCORER_OFF_NOTE
        if record is not None and not record.shipped:
            return f"{NOT_SHIPPED_NOTE} ({record.reason})" if record.reason else NOT_SHIPPED_NOTE
        return NO_SCORER_NOTE

    def _search(self, query: np.ndarray, k: int, filters: Optional[Mapping[str, Any]],
                exclude: Sequence[str], diversity: Optional[float]) -> Matches:
        _check_k(k)
        result = self.catalog.search(query, int(k), filters=filters, exclude=exclude,
                                     diversity=diversity, encoder_id=self.bundle.encoder_id)
        return cast(Matches, result)  # one (D,) query in, one Matches out

    def _reasons(self, profile: Profile, by_id: Mapping[str, np.ndarray],
                 results: Optional[np.ndarray], n: int) -> list[tuple[str, Optional[str]]]:
        """For each result, the positive history item closest to it and its strongest event."""
        weights = self.event_weights
        strongest: dict[str, EventKind] = {}
        for e in profile.events:  # oldest first: a later event of equal weight wins
            if weights[e.kind] > 0 and e.item_id in by_id:
                best = strongest.get(e.item_id)
                if best is None or weights[e.kind] >= weights[best]:
                    strongest[e.item_id] = e.kind
        names = list(strongest)
        if not names or results is None or n == 0:
            return [("recommended for you", None)] * n
        sims = results @ np.stack([by_id[i] for i in names]).T
        out = []
        for row in sims:
            item = names[int(np.argmax(row))]
            out.append((f"looks like {item} you {strongest[item].past_tense}", item))
        return out


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise CatalogError(f"k must be a positive int, got {k!r}")


def _id_list(ids: Any, what: str) -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise CatalogError(f"{what} must be a list of ids (for one id, pass [id]), got {ids!r}")
    return list(ids)


def _preview(ids: Sequence[str]) -> str:
    head = ", ".join(ids[:_PREVIEW])
    return head + (f", ... ({len(ids) - _PREVIEW} more)" if len(ids) > _PREVIEW else "")
