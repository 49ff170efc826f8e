"""`edgerec.sdk.__all__` is exactly the public surface."""

import importlib

import edgerec.sdk as sdk


def test_all_is_complete():
    public = {name for name in dir(sdk) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(sdk, name)).__name__ == "module"}
    assert set(sdk.__all__) == public - modules
    for module in ("bundle", "catalog", "catalog_build", "encoder", "errors", "importer",
                   "manifest", "metrics", "preprocess", "profile", "recommender", "scorer",
                   "search"):
        names = importlib.import_module(f"edgerec.sdk.{module}").__all__
        assert set(names) <= set(sdk.__all__), module
