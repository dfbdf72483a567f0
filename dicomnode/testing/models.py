"""Misbehaving and slow model functions for tests (``kind: python`` runners), and a
pipeline definition around them.

They live in the package so that a node in its own process can import them by their
``module:function`` name, exactly as it imports an AI engineer's code.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt


def slow_threshold(
    array: npt.NDArray[np.float32], seconds: float = 5.0, threshold: float = 300.0
) -> npt.NDArray[np.uint8]:
    """Label 1 where the value reaches ``threshold``, after ``seconds`` of "thinking"."""
    time.sleep(seconds)
    return (array >= threshold).astype(np.uint8)


def explode(array: npt.NDArray[np.float32], **_options: Any) -> npt.NDArray[np.uint8]:
    """A model with a bug."""
    raise ValueError("the model found a NaN where a tumour should be")


def needs_slices(
    array: npt.NDArray[np.float32], slices: int = 2, threshold: float = 300.0
) -> npt.NDArray[np.uint8]:
    """A model that fails on a series of fewer than ``slices`` slices (one still
    arriving), and labels 1 where the value reaches ``threshold`` once it has them."""
    if array.shape[0] < slices:
        raise ValueError(f"the model needs {slices} slices, got {array.shape[0]}")
    return (array >= threshold).astype(np.uint8)


def mean_probability(
    array: npt.NDArray[np.float32], scale: float = 1000.0
) -> npt.NDArray[np.float32]:
    """A two-class 'classifier': P(dense) grows with the mean value."""
    p = float(1.0 / (1.0 + np.exp(-float(array.mean()) / scale)))
    return np.asarray([1.0 - p, p], dtype=np.float32)


def bone_pipeline(model: str, **extra: Any) -> dict[str, Any]:
    """A one-segment pipeline on ``model`` (a ``kind: python`` model: no TensorFlow needed)."""
    return {
        "steps": [{"kind": "hu"}],
        "model": model,
        "output": {
            "kind": "segmentation",
            "segments": [
                {
                    "label": 1,
                    "name": "Bone",
                    "category": {"value": "85756007", "meaning": "Tissue"},
                    "type": {"value": "272673000", "meaning": "Bone"},
                }
            ],
        },
        "algorithm": {"name": model, "version": "0"},
        **extra,
    }
