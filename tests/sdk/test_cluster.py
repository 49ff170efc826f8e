"""The options every Ray job shares (:mod:`edgerec.sdk.cluster`); no Ray needed."""

from __future__ import annotations

import pytest
from edgerec.export.distill.cache_ray import RayCacheOptions
from edgerec.sdk.catalog.ray_build import RayBuildOptions
from edgerec.sdk.cluster import RayJobOptions, check_reachable
from edgerec.sdk.errors import CatalogError, RayUnavailableError


def test_jobs_share_the_options_and_keep_their_own_batch_defaults():
    assert issubclass(RayBuildOptions, RayJobOptions)
    assert issubclass(RayCacheOptions, RayJobOptions)
    assert RayBuildOptions().batch_size == 64
    assert RayCacheOptions().batch_size == 8
    assert RayBuildOptions(workers=3).workers == RayCacheOptions(workers=3).workers == 3


@pytest.mark.parametrize("bad", [{"workers": 0}, {"batch_size": 0}, {"cpus_per_worker": 0}])
def test_out_of_range_options_raise_each_jobs_own_error(bad):
    with pytest.raises(CatalogError, match="must be >= 1"):
        RayBuildOptions(**bad)
    with pytest.raises(ValueError, match="must be >= 1") as info:
        RayCacheOptions(**bad)
    assert not isinstance(info.value, CatalogError)


@pytest.mark.parametrize("address", ["nohost", "host:port", "ray://10.0.0.5"])
def test_malformed_address_is_refused_with_what_to_pass(address):
    with pytest.raises(RayUnavailableError, match="HOST:PORT"):
        check_reachable(address, timeout=0.1)
