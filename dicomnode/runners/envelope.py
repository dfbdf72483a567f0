"""A model's input envelope: the inputs it was validated on, as its YAML declares them.

::

    models:
      liver-unet:
        kind: onnx
        model: models/liver-unet.onnx
        envelope:
          modalities: [CT]
          body_parts: [ABDOMEN, CHEST]         # BodyPartExamined, any case
          slice_thickness_mm: {min: 2, max: 5}
          pixel_spacing_mm: {min: 0.5, max: 1.0}   # both in-plane values
          kvp: {min: 80, max: 140}
          manufacturers: [siemens, ge]          # a case-insensitive part of Manufacturer
          values: {units: HU, min: -1100, max: 3000}
          on_outside: skip                      # or flag: run, and say so in the results

Every key is optional; a key left out is not checked, and a model without ``envelope``
runs on anything. The check itself is :mod:`dicomnode.pipeline.envelope`; this module only
states the declaration, so that every runner kind accepts it and ``config check`` names a
bad key (``models.NAME.envelope.kvp: min 140 is above max 80``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# The units a volume is in when the envelope's values are checked (dicomnode.volume):
# HU for CT, SUVbw after a ``suv`` step, a PET series' own Units otherwise (PS3.3 C.8.9.1).
ValueUnits = Literal["HU", "SUVbw", "BQML", "CNTS", "GML"]

Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Frozen):
    """``{min: 2, max: 5}``: both ends included; either may be left out."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class PositiveRange(Range):
    """A range of sizes (mm, kV): its ends must be above zero."""

    @model_validator(mode="after")
    def _positive(self) -> PositiveRange:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be above 0, got {value:g}")
        return self


class ValueRange(Range):
    """The series' values, in ``units``, between ``min`` and ``max``.

    Robust ends are compared, not the extremes: the ``low_percentile`` of the values
    against ``min`` and the ``high_percentile`` against ``max`` (1 and 99 by default), so
    a few hot pixels or a metal artefact do not put a series outside.
    """

    units: ValueUnits
    low_percentile: Annotated[float, Field(ge=0, lt=50)] = 1.0
    high_percentile: Annotated[float, Field(gt=50, le=100)] = 99.0


class InputEnvelope(_Frozen):
    """What a model was validated on; a series outside it is skipped or flagged."""

    modalities: Annotated[tuple[Keyword, ...], Field(min_length=1)] | None = None
    body_parts: Annotated[tuple[Keyword, ...], Field(min_length=1)] | None = None
    slice_thickness_mm: PositiveRange | None = None
    pixel_spacing_mm: PositiveRange | None = None
    kvp: PositiveRange | None = None
    manufacturers: Annotated[tuple[Keyword, ...], Field(min_length=1)] | None = None
    values: ValueRange | None = None
    # skip: the job is not run (refused, with the reasons); flag: it runs, the results say so.
    on_outside: Literal["skip", "flag"] = "skip"
