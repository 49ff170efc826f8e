"""The public surface: `edgerec.sdk.__all__` is exactly the device surface, sorted; every
sub-package's `__all__` is exactly what its modules export; no module name hides a public
name (the naming traps of `from edgerec.sdk import preprocess` / `evaluate`)."""

import importlib
import json
import pkgutil
import subprocess
import sys

import edgerec.export
import edgerec.runtimes
import edgerec.sdk as sdk
import pytest


def _isort_key(name: str) -> tuple:
    """ruff's RUF022 order: CONSTANTS, then Classes, then the rest, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def _modules(package) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if not m.name.endswith("__main__"))


ALL_MODULES = [*_modules(edgerec.runtimes), *_modules(sdk), *_modules(edgerec.export)]
PACKAGES = ["edgerec.runtimes", "edgerec.sdk", *(m for m in ALL_MODULES
                                                 if hasattr(importlib.import_module(m),
                                                            "__path__"))]


def test_the_sdk_exports_exactly_its_public_names_in_sorted_order():
    public = [name for name, value in vars(sdk).items()
              if not name.startswith("_") and type(value).__name__ != "module"]
    assert sorted(sdk.__all__, key=_isort_key) == list(sdk.__all__)
    assert set(sdk.__all__) == set(public)


@pytest.mark.parametrize("name", ALL_MODULES)
def test_every_module_declares_what_it_exports_and_defines_it(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", PACKAGES)
def test_no_submodule_shares_a_name_with_a_public_name_of_its_package(name):
    package = importlib.import_module(name)
    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert not submodules & set(package.__all__), name


@pytest.mark.parametrize("name", ["edgerec.sdk.bundle", "edgerec.sdk.catalog",
                                  "edgerec.sdk.evaluation"])
def test_a_sub_package_exports_what_its_modules_export(name):
    package = importlib.import_module(name)
    from_modules = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{name}.{info.name}")
        from_modules |= {n for n in module.__all__ if getattr(package, n, None) is not None}
    assert set(package.__all__) <= from_modules | {m.name for m in pkgutil.iter_modules(
        package.__path__)}
    for n in package.__all__:
        assert getattr(package, n) is not None


def test_every_device_name_comes_from_a_module_that_exports_it():
    owners = {}
    for name in _modules(sdk):
        for n in importlib.import_module(name).__all__:
            owners.setdefault(n, name)
    runtimes = set(edgerec.runtimes.__all__)
    orphans = [n for n in sdk.__all__ if n not in owners and n not in runtimes]
    assert not orphans


def test_importing_the_sdk_does_not_load_evaluation_or_the_export():
    code = ("import sys, json, edgerec.sdk; print(json.dumps(sorted(m for m in sys.modules if "
            "m.startswith(('edgerec.sdk.evaluation', 'edgerec.export')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []
