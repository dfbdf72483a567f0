"""``hu``: insist that CT values are Hounsfield units before HU-based steps rely on them.

The loader applies RescaleSlope/RescaleIntercept and sets ``units`` to ``HU``; this step
makes a pipeline's assumption explicit and refuses a volume that is in other units rather
than guessing a rescale it cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dicomnode.errors import StepError
from dicomnode.pipeline.steps.abc import KeepsGrid, StepParams
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import Volume


class HuConfig(StepParams):
    """``{kind: hu}``; no parameters."""

    kind: Literal["hu"] = "hu"


@register(HuConfig)
@dataclass(frozen=True, slots=True)
class Hu(KeepsGrid):
    params: HuConfig

    def apply(self, volume: Volume) -> Volume:
        if volume.units == "HU":
            return volume
        raise StepError(
            f"hu needs CT values in HU; this {volume.modality or 'volume'} is in "
            f"{volume.units!r}, and no rescale to HU is known for it"
        )
