"""The behaviour file's contract: its arrays, their checks, the fold-in, and the manifest's
typed record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edgerec.sdk import BundleError, ModelError
from edgerec.sdk.behaviour import BehaviourModel
from edgerec.sdk.bundle.manifest import BehaviourRecord, FusionRecord, Manifest


def _model(n: int = 6, d: int = 3, dim: int = 8) -> BehaviourModel:
    rng = np.random.default_rng(0)
    collab = rng.normal(size=(n, d)).astype(np.float32)
    return BehaviourModel(
        ids=tuple(f"item-{i}" for i in range(n)), popularity=np.arange(n, dtype=np.float32),
        count=np.ones(n, np.float32), neighbours=np.full((n, 2), -1, np.int64),
        neighbour_scores=np.zeros((n, 2), np.float32), collab=collab,
        learned=np.ones(n, bool), gram=(collab.T @ collab).astype(np.float32),
        mapping_w=rng.normal(size=(dim, d)).astype(np.float32),
        mapping_b=np.zeros(d, np.float32), regularization=0.1, alpha=1.0)


def test_a_file_with_a_missing_array_or_bad_neighbours_is_refused_with_what_to_do():
    arrays = _model().to_arrays()
    del arrays["gram"]
    with pytest.raises(ModelError, match="export the bundle again"):
        BehaviourModel.from_arrays(arrays)
    arrays = _model().to_arrays()
    arrays["neighbours"][0, 0] = 99
    with pytest.raises(ModelError, match="do not index its 6 items"):
        BehaviourModel.from_arrays(arrays)


def test_the_fold_in_points_a_one_item_history_towards_that_item():
    model = _model()
    assert (model.user_factors(np.zeros((0, 3)), np.zeros(0)) == 0).all()
    x = model.user_factors(model.collab[2:3], np.array([2.0]))
    scores = model.collab @ x
    assert int(np.argmax(scores)) == 2
    assert model.map_vectors(np.ones((4, 8))).shape == (4, 3)


def test_the_manifest_parses_its_behaviour_record_and_refuses_a_shipped_one_without_a_file():
    fusion = FusionRecord(("visual", "cooc"), (1.0, 2.0), (0.0, 0.1), (1.0, 0.5), fitted=True,
                          validation={"users": 3})
    record = BehaviourRecord(file="behaviour.npz", sha256="a" * 64, size_bytes=10, items=6,
                             warm_items=5, dim=3, neighbours=2, fusion=fusion,
                             bytes_per_item=60.1)
    assert BehaviourRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    skipped = BehaviourRecord(shipped=False, reason="no shared item")
    assert BehaviourRecord.from_dict(skipped.to_dict()) == skipped
    with pytest.raises(ValueError, match="needs its file"):
        BehaviourRecord(shipped=True)
    with pytest.raises(ValueError, match="scale must be positive"):
        FusionRecord(("visual",), (1.0,), (0.0,), (0.0,))
    base = {"format_version": 1, "embedding_dim": 8, "encoder_id": "x",
            "preprocessing": {"input_size": 224, "mean": [0, 0, 0], "std": [1, 1, 1]},
            "artifacts": [{"file": "e.onnx", "sha256": "b" * 64, "role": "encoder",
                           "precision": "fp32", "engine": "onnx", "output": "y",
                           "inputs": [], "outputs": []}]}
    assert Manifest.from_json(json.dumps(base)).behaviour is None
    parsed = Manifest.from_json(json.dumps({**base, "behaviour": record.to_dict()}))
    assert parsed.behaviour == record
    with pytest.raises(BundleError, match="behaviour"):
        Manifest.from_json(json.dumps({**base, "behaviour": {"shipped": True}}))
