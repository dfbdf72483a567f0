"""The step list of a pipeline as YAML states it: ``steps: [{kind: window, ...}, ...]``.

``StepConfig`` is a discriminated union on ``kind``, so an unknown kind, a missing or
misspelt parameter, or a value of the wrong type is a validation error that names the step's
index and key. ``StepList`` adds the one rule between steps: only the last may make channels.
A pipeline model uses ``steps: StepList``; ``parse_steps`` validates a bare list.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter

from dicomnode.pipeline.steps.crop_pad import CropPadConfig
from dicomnode.pipeline.steps.hu import HuConfig
from dicomnode.pipeline.steps.normalize import NormalizeConfig
from dicomnode.pipeline.steps.register import RegisterConfig
from dicomnode.pipeline.steps.resample import ResampleConfig
from dicomnode.pipeline.steps.resize import ResizeConfig
from dicomnode.pipeline.steps.stack import StackConfig
from dicomnode.pipeline.steps.suv import SuvConfig
from dicomnode.pipeline.steps.window import WindowConfig

StepConfig = Annotated[
    HuConfig
    | SuvConfig
    | WindowConfig
    | NormalizeConfig
    | ResampleConfig
    | ResizeConfig
    | CropPadConfig
    | RegisterConfig
    | StackConfig,
    Field(discriminator="kind"),
]


def _channels_last(steps: tuple[StepConfig, ...]) -> tuple[StepConfig, ...]:
    for index, step in enumerate(steps[:-1]):
        if step.makes_channels:
            raise ValueError(
                f"step {index + 1} ({step.kind}) makes channels, so it must be the last step"
            )
    return steps


StepList = Annotated[tuple[StepConfig, ...], AfterValidator(_channels_last)]

_STEP_LIST: TypeAdapter[tuple[StepConfig, ...]] = TypeAdapter(StepList)


def parse_steps(raw: Any) -> tuple[StepConfig, ...]:
    """The validated step list; raises pydantic's ValidationError for the caller to place."""
    return _STEP_LIST.validate_python(raw)
