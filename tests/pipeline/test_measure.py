"""Region statistics, computed slab by slab, equal the plain numpy answer."""

from __future__ import annotations

import numpy as np

from dicomnode.pipeline.measure import region_stats


def test_matches_a_direct_computation_across_slab_edges() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(37, 20, 20)).astype(np.uint16)
    values = rng.normal(size=labels.shape).astype(np.float32)
    stats = {s.label: s for s in region_stats(labels, values, [1, 2, 3], 0.5, slab=8)}
    for label in (1, 2, 3):
        mask = labels == label
        assert stats[label].voxels == mask.sum()
        assert stats[label].volume_ml == mask.sum() * 0.5
        assert np.isclose(stats[label].mean, values[mask].mean(), rtol=1e-5)
        assert stats[label].maximum == values[mask].max()


def test_absent_and_unwanted_labels_are_left_out() -> None:
    labels = np.zeros((2, 3, 3), dtype=np.uint16)
    labels[0, 0, 0] = 5  # a label nobody asked for
    labels[1, 1, 1] = 1
    values = np.arange(18, dtype=np.float32).reshape(labels.shape)
    (only,) = region_stats(labels, values, [1, 2], 1.0)
    assert (only.label, only.voxels, only.mean, only.maximum) == (1, 1, 13.0, 13.0)
    assert only.total_lesion_glycolysis == 13.0
