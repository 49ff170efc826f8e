"""benchmarks/catalog_variant.py: the diagnostic catalogs the feed's trace uses (PCA-cut,
permuted and perturbed vectors), on a real catalog of the sample built with the shipped
student."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from catalog_variant import noise, pca, shuffle

STUDENT = ROOT / "examples" / "models" / "clothing-student"


def _unit(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("cos", [0.99, 0.9, 0.5])
def test_noise_keeps_the_asked_cosine_with_each_source_vector(cos):
    x = _unit(400, 128)
    y, text = noise(x, cos, seed=3)
    got = np.sum(x * y, axis=1)
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    assert abs(got.mean() - cos) < 0.01 and f"{got.mean():.4f}" in text
    assert np.array_equal(y, noise(x, cos, seed=3)[0])
    assert not np.array_equal(y, noise(x, cos, seed=4)[0])


def test_shuffle_gives_every_vector_to_another_item_and_loses_none():
    x = _unit(50, 16)
    y, _ = shuffle(x, seed=1)
    assert sorted(map(tuple, y)) == sorted(map(tuple, x))
    assert (np.abs(y - x).sum(axis=1) > 0).mean() > 0.9


def test_pca_keeps_inner_products_of_a_low_rank_collection():
    basis = np.linalg.qr(np.random.default_rng(2).standard_normal((64, 8)))[0]
    x = _unit(200, 8) @ basis.T  # 200 unit vectors inside an 8-d subspace of 64-d
    y, text = pca(x, 8)
    assert y.shape == (200, 8) and "100.0% of the energy" in text
    assert np.allclose(y @ y.T, x @ x.T, atol=1e-6)  # float32 rows


def test_the_cli_writes_a_catalog_the_bundle_opens_and_refuses_a_width_change(tmp_path):
    from edgerec.sdk import Bundle, Catalog, SourceItem, build_catalog

    bundle = Bundle.open(STUDENT)
    photos = sorted((ROOT / "examples" / "sample").rglob("*.jpg"))[:12]
    src = tmp_path / "src"
    build_catalog(bundle, src, [SourceItem(p.stem, p) for p in photos])
    script = [sys.executable, str(ROOT / "benchmarks" / "catalog_variant.py"), "--src", str(src),
              "--bundle", str(STUDENT)]
    run = subprocess.run([*script, "--out", str(tmp_path / "noisy"), "--noise", "0.95"],
                         capture_output=True, text=True, check=True)
    assert "12 items" in run.stdout
    with Catalog.open(src, readonly=True) as a, Catalog.open(tmp_path / "noisy",
                                                              readonly=True) as b:
        ga, ids, rows = a.item_rows()
        gb, ids_b, rows_b = b.item_rows()
        assert list(ids) == list(ids_b)
        va = a.vectors_at(rows, ga).astype(np.float64)
        vb = b.vectors_at(rows_b, gb).astype(np.float64)
    cos = np.sum(va * vb, axis=1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
    assert 0.9 < cos.mean() < 0.99
    bad = subprocess.run([*script, "--out", str(tmp_path / "x"), "--noise", "1.5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cosine in (0, 1]" in bad.stderr
