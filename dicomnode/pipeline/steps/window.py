"""``window``: clip to a display window, optionally mapped to 0..1.

``output: clip`` keeps the values (and units) inside [center - width/2, center + width/2];
``output: unit`` maps that interval linearly to [0, 1] (units become ``1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from dicomnode.pipeline.steps.abc import KeepsGrid, Number, PositiveNumber, StepParams
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import FloatArray, Volume

WindowOutput = Literal["clip", "unit"]


class WindowLevel(BaseModel):
    """A window as radiologists state it (same units as the volume: HU on CT)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    center: Number
    width: PositiveNumber

    def applied(self, array: FloatArray, output: WindowOutput) -> FloatArray:
        low = self.center - self.width / 2
        clipped = np.clip(array, low, low + self.width).astype(np.float32, copy=False)
        if output == "clip":
            return clipped
        clipped -= np.float32(low)
        clipped /= np.float32(self.width)
        return clipped


class WindowConfig(StepParams, WindowLevel):
    """``{kind: window, center: 40, width: 400, output: unit}``."""

    kind: Literal["window"] = "window"
    output: WindowOutput = "clip"


@register(WindowConfig)
@dataclass(frozen=True, slots=True)
class Window(KeepsGrid):
    params: WindowConfig

    def apply(self, volume: Volume) -> Volume:
        units = volume.units if self.params.output == "clip" else "1"
        return volume.with_array(self.params.applied(volume.array, self.params.output), units=units)
