"""``register``: the volume, aligned by a 12-parameter affine transform, on a template's grid.

For models trained on data normalised to an atlas or a reference scan (brain MRI to
MNI space, a PET to its CT template): the volume is registered to the template image
with SimpleITK (Mattes mutual information by default, so a template of another modality
works), then resampled onto the template's grid, linearly; voxels that fall outside the
volume take its minimum (air, for HU).

The transform found (template points to source points, LPS mm) is recorded in the
output's ``metadata["register"]``, so ``restore_labels`` maps a result on the template
grid back onto the source through its inverse: label maps by nearest neighbour,
probability maps linearly. ``refs`` still name the source slices (see ``resample``).

A relative ``template`` is taken from the configuration file's folder (``base_dir``,
given to ``build_steps``); building the step reads the file's header, so a missing or
unreadable template fails ``dicomnode config check``, not the first study.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, Strict, model_validator

from dicomnode.errors import StepError
from dicomnode.logs import get_logger
from dicomnode.pipeline.steps.abc import (
    Count,
    LabelArray,
    PositiveNumber,
    StepParams,
    is_label_map,
)
from dicomnode.pipeline.steps.registry import register
from dicomnode.volume import Volume

log = get_logger(__name__)

METADATA_KEY = "register"

Fraction = Annotated[float, Strict(), Field(gt=0, le=1)]
Sigma = Annotated[float, Strict(), Field(ge=0)]


class RegisterConfig(StepParams):
    """``{kind: register, template: templates/mni152_t1_2mm.nii.gz}``; the rest has defaults."""

    kind: Literal["register"] = "register"
    template: Path  # NIfTI, MetaImage, NRRD ...: whatever SimpleITK reads
    metric: Literal["mattes", "correlation"] = "mattes"
    histogram_bins: Count = 50  # Mattes mutual information only
    sampling_fraction: Fraction = 0.1  # of the voxels at each level, drawn at random
    seed: Annotated[int, Strict(), Field(ge=0)] = 1  # of that draw: same inputs, same result
    optimizer: Literal["gradient_descent", "lbfgs"] = "gradient_descent"
    iterations: Count = 200  # per pyramid level
    learning_rate: PositiveNumber = 1.0  # gradient descent's first step, about mm
    min_step: PositiveNumber = 0.001  # it stops when its step falls below this
    # The step shrinks by this each time the gradient turns back; 0.5 stops too early on
    # a metric estimated from a random sample.
    relaxation: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.8
    shrink_factors: Annotated[tuple[Count, ...], Field(min_length=1)] = (4, 2, 1)
    smoothing_sigmas: Annotated[tuple[Sigma, ...], Field(min_length=1)] = (2.0, 1.0, 0.0)  # mm
    initialization: Literal["geometry", "moments"] = "geometry"

    @model_validator(mode="after")
    def _one_sigma_per_level(self) -> Self:
        if len(self.shrink_factors) != len(self.smoothing_sigmas):
            raise ValueError(
                f"smoothing_sigmas has {len(self.smoothing_sigmas)} levels and shrink_factors "
                f"{len(self.shrink_factors)}; give one of each per pyramid level"
            )
        return self

    def resolved(self, base_dir: Path) -> Self:
        if self.template.is_absolute():
            return self
        return self.model_copy(update={"template": base_dir / self.template})


@register(RegisterConfig)
@dataclass(frozen=True, slots=True)
class Register:
    params: RegisterConfig

    def __post_init__(self) -> None:
        from dicomnode.pipeline.steps.itk_grid import check_template

        check_template(self.params.template)

    def apply(self, volume: Volume) -> Volume:
        from dicomnode.pipeline.steps.affine_fit import Settings, fit_affine
        from dicomnode.pipeline.steps.itk_grid import (
            geometry_of,
            image_of,
            read_template,
            resampled,
        )

        started = time.perf_counter()
        template = read_template(self.params.template)
        try:
            grid = geometry_of(template)
        except ValueError as exc:
            raise StepError(f"template {self.params.template}: {exc}") from None
        moving = image_of(volume.array.astype("float32", copy=False), volume.geometry)
        settings = Settings(**self.params.model_dump(exclude={"kind", "template"}))
        fit = fit_affine(template, moving, settings)
        shape = (template.GetDepth(), template.GetHeight(), template.GetWidth())
        outside = float(volume.array.min()) if volume.array.size else 0.0
        array = resampled(
            volume.array, volume.geometry, fit.transform, shape, grid,
            nearest=False, default=outside,
        )  # fmt: skip
        log.info(
            "volume_registered",
            metric=self.params.metric,
            metric_value=round(fit.metric_value, 6),
            iterations=fit.iterations,
            stop=fit.stop,
            seconds=round(time.perf_counter() - started, 3),
        )
        metadata = {**volume.metadata, METADATA_KEY: fit.record()}
        return volume.with_array(array, geometry=grid, metadata=metadata)

    def restore_labels(self, labels: LabelArray, before: Volume, after: Volume) -> LabelArray:
        from dicomnode.pipeline.steps.affine_fit import affine_from
        from dicomnode.pipeline.steps.itk_grid import resampled

        try:
            transform = affine_from(after.metadata.get(METADATA_KEY))
        except (ValueError, KeyError, TypeError) as exc:
            raise StepError(
                f"register: the registered volume records no transform ({exc})"
            ) from None
        # Each source point's place on the template grid: the inverse of template -> source.
        inverse = transform.GetInverse()
        return resampled(
            labels, after.geometry, inverse, before.shape, before.geometry,
            nearest=is_label_map(labels),
        )  # fmt: skip
