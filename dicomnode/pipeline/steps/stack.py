"""``stack``: several windows of the same volume as channels, for multi-channel models.

Representation: the Volume's array gains a trailing channel axis, (z, y, x, c), one channel
per window in the order written; grid, geometry and refs are those of (z, y, x). Only the
last step of a pipeline may make channels (``build_steps`` and the step list's validator
refuse otherwise), so every other step sees (z, y, x), and a runner receives either
(z, y, x) or (z, y, x, c). ``Volume.shape`` reads three axes: use ``array.shape[:3]`` for
the grid of a stacked volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field

from dicomnode.pipeline.steps.abc import KeepsGrid, StepParams
from dicomnode.pipeline.steps.registry import register
from dicomnode.pipeline.steps.window import WindowLevel, WindowOutput
from dicomnode.volume import Volume

_SLICES_PER_CHUNK = 8


class StackConfig(StepParams):
    """``{kind: stack, channels: [{center: 40, width: 400}, {center: 500, width: 2000}]}``."""

    makes_channels: ClassVar[bool] = True

    kind: Literal["stack"] = "stack"
    channels: Annotated[tuple[WindowLevel, ...], Field(min_length=1)]
    output: WindowOutput = "unit"  # the same for every channel, so units stay one string


@register(StackConfig)
@dataclass(frozen=True, slots=True)
class Stack(KeepsGrid):
    params: StackConfig

    def apply(self, volume: Volume) -> Volume:
        output = self.params.output
        shape = (*volume.array.shape, len(self.params.channels))
        stacked = np.empty(shape, dtype=np.float32)
        # A few slices at a time: the interleaved writes stay in cache (2-3x faster on a CT).
        for start in range(0, shape[0], _SLICES_PER_CHUNK):
            part = volume.array[start : start + _SLICES_PER_CHUNK]
            for channel, window in enumerate(self.params.channels):
                stacked[start : start + _SLICES_PER_CHUNK, ..., channel] = window.applied(
                    part, output
                )
        return volume.with_array(stacked, units=volume.units if output == "clip" else "1")
