"""The on-device catalog cache: vectors, ids and metadata, versioned by generation.

- :mod:`.catalog`: :class:`Catalog`, the public object (create, open, add, update, remove,
  compact, search, verify);
- :mod:`.store`: the on-disk format and the commit protocol; :mod:`.writer`: the next
  generation inside one transaction; :mod:`.checks`: validation of inputs and of what is
  stored;
- :mod:`.filters`: the metadata filter language; :mod:`.scan`: the exact top-k scan and MMR;
  :mod:`.prefilter`: the int8 pre-filter on ONNX Runtime; :mod:`.matches`: the results;
- :mod:`.ingest`: the one reader of item folders and CSVs; :mod:`.build`: filling a catalog
  from photos."""

from __future__ import annotations

from edgerec.sdk.catalog.build import (
    IngestReport,
    add_images,
    build_catalog,
)
from edgerec.sdk.catalog.catalog import (
    Catalog,
    CatalogInfo,
    CatalogItem,
    VectorDType,
)
from edgerec.sdk.catalog.ingest import (
    IMAGE_SUFFIXES,
    ItemListing,
    ListingProblem,
    ProblemKind,
    SourceItem,
    items_from_csv,
    items_from_folder,
    listing_from_csv,
    listing_from_folder,
    parse_value,
)
from edgerec.sdk.catalog.matches import (
    BatchMatches,
    Match,
    Matches,
    make_matches,
)
from edgerec.sdk.catalog.prefilter import (
    SearchKernel,
    SearchLayout,
    search_kernel,
    search_layout,
    set_search_kernel,
    set_search_layout,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "BatchMatches",
    "Catalog",
    "CatalogInfo",
    "CatalogItem",
    "IngestReport",
    "ItemListing",
    "ListingProblem",
    "Match",
    "Matches",
    "ProblemKind",
    "SearchKernel",
    "SearchLayout",
    "SourceItem",
    "VectorDType",
    "add_images",
    "build_catalog",
    "items_from_csv",
    "items_from_folder",
    "listing_from_csv",
    "listing_from_folder",
    "make_matches",
    "parse_value",
    "search_kernel",
    "search_layout",
    "set_search_kernel",
    "set_search_layout",
]
