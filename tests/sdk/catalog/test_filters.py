"""A filter on a metadata key no item has is an error naming the keys items have, not silence."""

from __future__ import annotations

import numpy as np
import pytest
from edgerec.sdk import UnknownFilterKeyError
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.catalog.filters import positive_filter_keys
from edgerec.sdk.errors import CatalogError

DIM = 8


def _unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    cat = Catalog.create(tmp_path_factory.mktemp("f") / "cat", dim=DIM, encoder_id="enc")
    meta = [{"label": ["shoes", "hat"][i % 2], "price": float(i), "tags": ["sale"],
             "details": {"size": 40}} for i in range(12)]
    cat.add([f"id{i}" for i in range(12)], _unit(12), meta)
    yield cat
    cat.close()


@pytest.mark.parametrize("filters", [
    {"colour": "red"},
    {"colour": {"in": ["red"]}},
    {"colour": {"exists": True}},
    {"colour": {"gte": 1}},
    {"label": "shoes", "colour": {"ne": "blue", "eq": "red"}},
    {"details": 40},  # a nested dict is not a filterable scalar
])
def test_a_positive_condition_on_a_key_no_item_has_names_the_known_keys(shop, filters):
    with pytest.raises(UnknownFilterKeyError) as info:
        shop.search(_unit(1, seed=1)[0], k=3, filters=filters)
    err = info.value
    assert isinstance(err, CatalogError)
    assert err.known == ("label", "price", "tags")
    assert "the keys items have are: 'label', 'price', 'tags'" in str(err)
    assert set(err.missing) <= {"colour", "details"} and err.missing


def test_the_recommender_path_filter_ids_refuses_an_unknown_key_too(shop):
    with pytest.raises(UnknownFilterKeyError, match="'colour'"):
        shop.filter_ids({"colour": "red"})


@pytest.mark.parametrize("filters", [
    {"colour": None},
    {"colour": {"ne": "red"}},
    {"colour": {"nin": ["red"]}},
    {"colour": {"exists": False}},
])
def test_negative_conditions_on_a_key_no_item_has_exclude_nothing(shop, filters):
    q = _unit(1, seed=2)[0]
    assert list(shop.search(q, k=12, filters=filters).ids) == list(shop.search(q, k=12).ids)


def test_a_known_key_with_no_matching_value_still_returns_nothing(shop):
    assert len(shop.search(_unit(1, seed=3)[0], k=3, filters={"label": "sandals"})) == 0


def test_an_empty_catalog_accepts_any_filter(tmp_path):
    with Catalog.create(tmp_path / "empty", dim=DIM, encoder_id="enc") as cat:
        assert len(cat.search(_unit(1)[0], k=3, filters={"colour": "red"})) == 0


def test_positive_filter_keys_reads_operators_and_aliases():
    assert positive_filter_keys({
        "a": "x", "b": None, "c": {"ne": 1}, "d": {"not_in": [1]}, "e": {"exists": False},
        "f": {"exists": True}, "g": {"ne": 1, "ge": 2}, "h": {"nin": [1], "in": [2]},
    }) == ["a", "f", "g", "h"]
