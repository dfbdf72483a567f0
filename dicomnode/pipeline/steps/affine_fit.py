"""Finding the 12-parameter affine transform that best aligns a volume with a template.

SimpleITK's registration framework (ITK v4) with a fixed random sample (a set seed, so
the same inputs give the same transform), linear interpolation and a coarse-to-fine
pyramid. The transform maps template (fixed) points to volume (moving) points in LPS mm;
resampling the volume through it puts the volume on the template's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import SimpleITK as sitk  # noqa: N813 - the name its documentation and users know

from dicomnode.errors import StepError
from dicomnode.pipeline.steps.itk_grid import itk_reason

UNDEFINED = 1e300


@dataclass(frozen=True, slots=True)
class Settings:
    """How to register; RegisterConfig's fields, without the template."""

    metric: str
    histogram_bins: int
    sampling_fraction: float
    seed: int
    optimizer: str
    iterations: int
    learning_rate: float
    min_step: float
    relaxation: float
    shrink_factors: tuple[int, ...]
    smoothing_sigmas: tuple[float, ...]
    initialization: str


@dataclass(frozen=True, slots=True)
class Fit:
    """The transform found, and how the optimiser ended (for the log and the record)."""

    transform: sitk.AffineTransform
    metric_value: float
    iterations: int  # at the finest level
    stop: str

    def record(self) -> dict[str, Any]:
        """JSON-friendly: enough to rebuild the transform and to judge the fit."""
        return {
            "transform": "affine",
            "maps": "template_to_source_lps_mm",
            "parameters": [float(v) for v in self.transform.GetParameters()],
            "fixed_parameters": [float(v) for v in self.transform.GetFixedParameters()],
            "metric_value": self.metric_value,
            "iterations": self.iterations,
        }


def affine_from(record: Any) -> sitk.AffineTransform:
    """The transform a Fit's ``record`` names; ValueError when it names none."""
    if not isinstance(record, dict) or record.get("transform") != "affine":
        raise ValueError("no affine transform recorded")
    transform = sitk.AffineTransform(3)
    transform.SetFixedParameters([float(v) for v in record["fixed_parameters"]])
    transform.SetParameters([float(v) for v in record["parameters"]])
    return transform


def fit_affine(template: sitk.Image, moving: sitk.Image, settings: Settings) -> Fit:
    """The affine transform taking ``template`` points onto matching ``moving`` points.

    Both images are float32. Raises StepError when SimpleITK fails or the metric ends
    undefined (no overlap left between the images).
    """
    for name, image in (("template", template), ("volume", moving)):
        view = sitk.GetArrayViewFromImage(image)
        if view.size == 0 or view.min() == view.max():
            raise StepError(f"register: the {name} has one value everywhere: nothing to align")
    method = _method(settings)
    initializer = sitk.CenteredTransformInitializerFilter
    mode = initializer.MOMENTS if settings.initialization == "moments" else initializer.GEOMETRY
    try:
        initial = sitk.CenteredTransformInitializer(template, moving, sitk.AffineTransform(3), mode)
        method.SetInitialTransform(initial, inPlace=True)
        method.Execute(template, moving)
    except RuntimeError as exc:
        raise StepError(f"register: SimpleITK failed ({itk_reason(exc)})") from None
    value = float(method.GetMetricValue())
    # ITK reports "no valid points" (no overlap left) as the largest double.
    if not math.isfinite(value) or abs(value) > UNDEFINED:
        raise StepError(
            f"register: the metric ended undefined ({value}); the volume and the template "
            "do not overlap (check that they show the same body region)"
        )
    # In place: ``initial`` itself was optimised, and is the affine transform found.
    transform = sitk.AffineTransform(initial)
    return Fit(
        transform,
        value,
        int(method.GetOptimizerIteration()),
        method.GetOptimizerStopConditionDescription(),
    )


def _method(settings: Settings) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    if settings.metric == "correlation":
        method.SetMetricAsCorrelation()
    else:
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    if settings.sampling_fraction < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(settings.sampling_fraction, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    if settings.optimizer == "lbfgs":
        method.SetOptimizerAsLBFGS2(numberOfIterations=settings.iterations)
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.learning_rate,
            minStep=settings.min_step,
            numberOfIterations=settings.iterations,
            relaxationFactor=settings.relaxation,
            gradientMagnitudeTolerance=1e-8,
        )
    # A unit step moves a voxel about as far for a matrix entry as for a translation.
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(settings.shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method
