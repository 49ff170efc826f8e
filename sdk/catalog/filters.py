"""The metadata filter language of catalog search, compiled to SQL over the ``attrs`` index.

When an item is written, every top-level scalar of its metadata (and every scalar element of a
top-level list) goes into the SQLite table ``attrs(key, kind, value, item)``, whose primary key
``(key, kind, value, item)`` makes equality, set and range conditions index lookups instead of
a JSON parse of every row. :func:`compile_filters` turns a filter mapping into one SQL query
that yields the matching rows; the catalog runs it once per search call (and caches the rows
per generation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from edgerec.sdk.catalog.store import attr_value
from edgerec.sdk.errors import CatalogError

__all__ = ["compile_filters"]

_OPS = {"eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "exists"}
_ALIASES = {"le": "lte", "ge": "gte", "not_in": "nin"}
_SQL_RANGE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_ALL_ITEMS = "SELECT key FROM items"


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
    Returns ``(sql, params)``; the SQL yields one column, ``row``.
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

