"""The metadata filter language of catalog search, compiled to SQL over the ``attrs`` index.

When an item is written, every top-level scalar of its metadata (and every scalar element of a
top-level list) goes into the SQLite table ``attrs(key, kind, value, item)``, whose primary key
``(key, kind, value, item)`` makes equality, set and range conditions index lookups instead of
a JSON parse of every row. :func:`compile_filters` turns a filter mapping into one SQL query
that yields the matching rows; the catalog runs it once per search call (and caches the rows
per generation).

A positive condition on a key that no item has (a typo, ``{"colour": "red"}`` in a catalog of
``color``) would silently match nothing, so :func:`check_filter_keys` refuses it with an
:class:`~edgerec.sdk.errors.UnknownFilterKeyError` that lists the keys the catalog does have.
Negative conditions (``None``, ``ne``, ``nin``, ``exists: False``) on such a key are allowed and
exclude nothing: no item has the key, so every item satisfies them.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from typing import Any

import numpy as np
from edgerec.sdk.catalog.store import attr_value
from edgerec.sdk.errors import CatalogError, UnknownFilterKeyError

__all__ = ["check_filter_keys", "compile_filters", "known_filter_keys", "positive_filter_keys"]

_OPS = {"eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "exists"}
_ALIASES = {"le": "lte", "ge": "gte", "not_in": "nin"}
_SQL_RANGE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_ALL_ITEMS = "SELECT key FROM items"
_NEGATIVE_OPS = {"ne", "nin"}  # conditions that only ever exclude items
_KEYS_SHOWN = 40  # known keys listed in an error message


def _scalar(key: str, value: Any) -> tuple[int, Any]:
    if isinstance(value, np.generic):
        value = value.item()
    kv = attr_value(value)
    if kv is None or (isinstance(value, float) and not math.isfinite(value)):
        raise CatalogError(
            f"filter on {key!r}: {value!r} is not a str, finite number or bool; "
            "filters compare metadata scalars (or elements of metadata lists)"
        )
    return kv


def _eq(key: str, value: Any) -> tuple[str, list[Any]]:
    kind, v = _scalar(key, value)
    return "SELECT item FROM attrs WHERE key = ? AND kind = ? AND value = ?", [key, kind, v]


def _range(key: str, op: str, value: Any) -> tuple[str, list[Any]]:
    kind, v = _scalar(key, value)
    if isinstance(value, bool):
        raise CatalogError(f"filter on {key!r}: {op!r} needs a number or a str, not a bool")
    sql = f"SELECT item FROM attrs WHERE key = ? AND kind = ? AND value {_SQL_RANGE[op]} ?"
    return sql, [key, kind, v]


def _in(key: str, values: Any) -> tuple[str, list[Any]]:
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
        raise CatalogError(f"filter on {key!r}: 'in'/'nin' need a list of values, got {values!r}")
    by_kind: dict[int, list[Any]] = {}
    for value in values:
        kind, v = _scalar(key, value)
        by_kind.setdefault(kind, []).append(v)
    if not by_kind:
        return "SELECT item FROM attrs WHERE 0", []
    terms, params = [], [key]
    for kind, vs in sorted(by_kind.items()):
        terms.append(f"(kind = ? AND value IN ({', '.join('?' * len(vs))}))")
        params += [kind, *vs]
    return f"SELECT item FROM attrs WHERE key = ? AND ({' OR '.join(terms)})", params


def _exists(key: str) -> tuple[str, list[Any]]:
    return "SELECT item FROM attrs WHERE key = ?", [key]


def compile_filters(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Turn a filter mapping into SQL selecting the catalog rows that match all of it.

    Keys are top-level metadata keys; a condition is one of:

    - a scalar (str, number, bool): equality, e.g. ``{"label": "shoes", "in_stock": True}``;
    - ``None``: the key is missing or null;
    - a dict of operators, all of which must hold: ``eq``, ``ne``, ``lt``, ``lte`` (``le``),
      ``gt``, ``gte`` (``ge``), ``in``, ``nin`` (``not_in``), ``exists`` (bool), e.g.
      ``{"price": {"gte": 10, "lt": 50}}``, ``{"label": {"in": ["shoes", "hat"]}}``.

    Comparisons are typed: ``1`` does not match ``true``, and ranges compare numbers with
    numbers and strings with strings. A metadata list matches when any of its elements does.
    ``None``, ``ne``, ``nin`` and ``exists: False`` hold for an item without the key; the
    other conditions need it (the catalog refuses them on a key no item has, see
    :func:`check_filter_keys`). Returns ``(sql, params)``; the SQL yields one column, ``row``.
    """
    if not isinstance(filters, Mapping):
        raise CatalogError(f"filters must be a dict like {{'label': 'shoes'}}, got {filters!r}")
    keep: list[tuple[str, list[Any]]] = []
    drop: list[tuple[str, list[Any]]] = []
    for key, cond in filters.items():
        if not isinstance(key, str) or not key:
            raise CatalogError(f"filter keys must be non-empty str metadata keys, got {key!r}")
        if cond is None:
            drop.append(_exists(key))
        elif isinstance(cond, Mapping):
            if not cond:
                raise CatalogError(f"filter on {key!r} has no operator; use one of {sorted(_OPS)}")
            for raw_op, operand in cond.items():
                op = _ALIASES.get(raw_op, raw_op)
                if op not in _OPS:
                    raise CatalogError(
                        f"filter on {key!r}: unknown operator {raw_op!r}; use one of {sorted(_OPS)}"
                    )
                if op in ("eq", "ne"):
                    (keep if op == "eq" else drop).append(_eq(key, operand))
                elif op in _SQL_RANGE:
                    keep.append(_range(key, op, operand))
                elif op in ("in", "nin"):
                    (keep if op == "in" else drop).append(_in(key, operand))
                else:
                    (keep if operand else drop).append(_exists(key))
        elif isinstance(cond, (list, tuple, set, frozenset)):
            raise CatalogError(
                f"filter on {key!r}: for a set of values write {{{key!r}: {{'in': [...]}}}}"
            )
        else:
            keep.append(_eq(key, cond))
    parts = keep or [(_ALL_ITEMS, [])]
    sql = " INTERSECT ".join(p for p, _ in parts)
    params = [x for _, ps in parts for x in ps]
    for p, ps in drop:
        sql += f" EXCEPT {p}"
        params += ps
    return f"SELECT row FROM items WHERE key IN ({sql}) ORDER BY row", params



def positive_filter_keys(filters: Mapping[str, Any]) -> list[str]:
    """The keys of ``filters`` with a condition an item can only meet by having the key: a
    scalar, or an operator other than ``ne``/``nin``/``exists: False``. In filter order."""
    keys = []
    for key, cond in filters.items() if isinstance(filters, Mapping) else ():
        if cond is None:
            continue
        if isinstance(cond, Mapping):
            ops = {_ALIASES.get(op, op): operand for op, operand in cond.items()}
            positive = [op for op, operand in ops.items()
                        if op not in _NEGATIVE_OPS and not (op == "exists" and not operand)]
            if not positive:
                continue
        keys.append(key)
    return keys


def known_filter_keys(db: sqlite3.Connection, limit: int = _KEYS_SHOWN + 1) -> list[str]:
    """Up to ``limit`` metadata keys that at least one item has a scalar value for, sorted;
    one index seek per key, however many items there are."""
    keys: list[str] = []
    row = db.execute("SELECT min(key) FROM attrs").fetchone()
    while row and row[0] is not None and len(keys) < limit:
        keys.append(row[0])
        row = db.execute("SELECT min(key) FROM attrs WHERE key > ?", (row[0],)).fetchone()
    return keys


def check_filter_keys(filters: Mapping[str, Any], db: sqlite3.Connection) -> None:
    """Raise :class:`UnknownFilterKeyError` when a positive condition of ``filters`` names a
    key no item in ``db`` has (see :func:`positive_filter_keys`). An empty catalog passes:
    every filter matches nothing there."""
    keys = positive_filter_keys(filters)
    missing = [k for k in keys if isinstance(k, str)
               and db.execute("SELECT 1 FROM attrs WHERE key = ? LIMIT 1", (k,)).fetchone() is None]
    if not missing or db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None:
        return
    known = known_filter_keys(db)
    shown = ", ".join(repr(k) for k in known[:_KEYS_SHOWN]) + (", ..." if len(known) > _KEYS_SHOWN
                                                             else "")
    names = ", ".join(repr(k) for k in missing)
    raise UnknownFilterKeyError(
        f"no item in the catalog has the metadata key{'s' if len(missing) > 1 else ''} {names}, "
        f"so the filter would match nothing; the keys items have are: {shown or 'none'}. "
        "Check the spelling, or use {key: None} / {'exists': False} to ask for items without it.",
        missing=tuple(missing), known=tuple(known[:_KEYS_SHOWN]),
    )
