"""The design of ``ct_tissue_reference.keras``: tissue classes from fixed HU ranges.

A REFERENCE model, not a clinical one. It labels each CT pixel by its Hounsfield value
alone, with the textbook ranges: fat [-190, -30], soft tissue [-29, 150], bone >= 300;
everything else (air, lung, 151..299 such as contrast-filled vessels) is background.

It is two 1x1 convolutions with weights set by hand, no training:

1. ``hu_thresholds`` (1 -> 4, sigmoid): ``u_i = sigmoid(SLOPE * (hu - t_i))``, one soft
   step at each edge ``t = (-190.5, -29.5, 150.5, 299.5)``. Edges sit half-way between
   integers, so every integer HU lands on the right side by 0.5 HU: with ``SLOPE`` 20 per
   HU the step is 0.99995 complete there.
2. ``tissue_probabilities`` (4 -> 4, softmax): memberships that are differences of steps,
   ``fat = u1 - u2``, ``soft = u2 - u3``, ``bone = u4``,
   ``background = 1 - u1 + u3 - u4`` (they sum to 1), scaled by ``LOGIT_SCALE`` into a
   softmax so the output is a proper probability per class.

This module holds the numbers and a NumPy twin of the network (no TensorFlow), so the
pipeline can name the classes and tests can check the model file against the design.
``scripts/build_reference_models.py`` builds the Keras file from ``layer_weights()``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CLASSES = ("background", "fat", "soft_tissue", "bone")  # output channel order
BACKGROUND, FAT, SOFT_TISSUE, BONE = range(4)

# Inclusive integer HU ranges of each tissue class; bone has no upper bound.
FAT_HU = (-190, -30)
SOFT_TISSUE_HU = (-29, 150)
BONE_MIN_HU = 300

EDGES = (FAT_HU[0] - 0.5, FAT_HU[1] + 0.5, SOFT_TISSUE_HU[1] + 0.5, BONE_MIN_HU - 0.5)
SLOPE = 20.0  # per HU: steep enough that integers 0.5 HU from an edge are 0.99995 decided
LOGIT_SCALE = 12.0  # a clear membership of 1 gives probability e^12 / (e^12 + 3) = 0.99982

# Memberships as a linear map of the four steps: row i is step u_i, column j class j.
_MEMBERSHIP = np.array(
    [
        # background, fat, soft tissue, bone
        [-1.0, 1.0, 0.0, 0.0],  # u1: above the fat floor
        [0.0, -1.0, 1.0, 0.0],  # u2: above the fat ceiling
        [1.0, 0.0, -1.0, 0.0],  # u3: above the soft-tissue ceiling
        [-1.0, 0.0, 0.0, 1.0],  # u4: bone
    ]
)
_MEMBERSHIP_BIAS = np.array([1.0, 0.0, 0.0, 0.0])


def layer_weights() -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Kernel and bias of each Conv2D 1x1 layer, in Keras's (1, 1, in, out) layout."""
    edges = np.asarray(EDGES)
    thresholds_kernel = np.full((1, 1, 1, 4), SLOPE)
    thresholds_bias = -SLOPE * edges
    probabilities_kernel = (LOGIT_SCALE * _MEMBERSHIP).reshape(1, 1, 4, 4)
    probabilities_bias = LOGIT_SCALE * _MEMBERSHIP_BIAS
    return {
        "hu_thresholds": (
            thresholds_kernel.astype(np.float32),
            thresholds_bias.astype(np.float32),
        ),
        "tissue_probabilities": (
            probabilities_kernel.astype(np.float32),
            probabilities_bias.astype(np.float32),
        ),
    }


def probabilities(hu: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The network's output computed with NumPy: shape ``hu.shape + (4,)``."""
    values = np.asarray(hu, dtype=np.float64)[..., np.newaxis]
    steps = 0.5 * (1.0 + np.tanh(0.5 * SLOPE * (values - np.asarray(EDGES))))  # sigmoid
    logits = LOGIT_SCALE * (steps @ _MEMBERSHIP + _MEMBERSHIP_BIAS)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    result: npt.NDArray[np.float64] = weights / weights.sum(axis=-1, keepdims=True)
    return result


def true_labels(hu: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """The class each integer HU value belongs to by the ranges above (the ground truth)."""
    values = np.asarray(hu)
    labels = np.full(values.shape, BACKGROUND, dtype=np.uint8)
    labels[(values >= FAT_HU[0]) & (values <= FAT_HU[1])] = FAT
    labels[(values >= SOFT_TISSUE_HU[0]) & (values <= SOFT_TISSUE_HU[1])] = SOFT_TISSUE
    labels[values >= BONE_MIN_HU] = BONE
    return labels
