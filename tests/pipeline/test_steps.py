"""Preprocessing steps: validation from YAML, each step on small volumes, and restoration."""

from __future__ import annotations

import types
import typing
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from pydantic import ValidationError

import dicomnode.pipeline.steps as steps_package
from dicomnode.errors import ConfigError, StepError
from dicomnode.pipeline.steps import (
    STEPS,
    StepConfig,
    build_steps,
    parse_steps,
    restore,
    run_steps,
)
from dicomnode.volume import Geometry, SliceRef, Volume

# An oblique grid, so that a mistake in any direction or axis order shows.
ROW = (np.cos(0.3), np.sin(0.3), 0.0)
COLUMN = (-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2))


def make_geometry(spacing: tuple[float, float, float] = (2.5, 0.8, 0.7)) -> Geometry:
    normal = tuple(float(v) for v in np.cross(ROW, COLUMN))
    return Geometry(
        origin=(-120.0, -95.5, 40.25),
        row_direction=(float(ROW[0]), float(ROW[1]), float(ROW[2])),
        column_direction=(float(COLUMN[0]), float(COLUMN[1]), float(COLUMN[2])),
        slice_direction=(normal[0], normal[1], normal[2]),
        spacing=spacing,
    )


def make_volume(
    array: npt.ArrayLike,
    units: str = "HU",
    geometry: Geometry | None = None,
    modality: str = "CT",
) -> Volume:
    data = np.asarray(array, dtype=np.float32)
    refs = tuple(SliceRef("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{z}") for z in range(data.shape[0]))
    return Volume(
        array=data,
        geometry=geometry or make_geometry(),
        refs=refs,
        modality=modality,
        units=units,
        series_instance_uid="1.2.3",
    )


def patient_positions(geometry: Geometry, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """(z, y, x, 3): the patient position of every voxel centre."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape[:3]), indexing="ij"), axis=-1)
    homogeneous = np.concatenate([index, np.ones((*index.shape[:3], 1))], axis=-1)
    return (homogeneous @ geometry.affine().T)[..., :3]


def linear_field(geometry: Geometry, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """Values that are a linear function of position: linear interpolation keeps them exact."""
    field: npt.NDArray[np.float64] = patient_positions(geometry, shape) @ np.array([0.7, -1.3, 2.1])
    return field + 5.0


def one(config: dict[str, Any]) -> Any:
    return build_steps(parse_steps([config]))[0]


def dice(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def disk(shape: tuple[int, int, int], radius: float) -> npt.NDArray[np.uint8]:
    _, rows, columns = shape
    y, x = np.mgrid[:rows, :columns]
    inside = (y - rows / 2 + 0.5) ** 2 + (x - columns / 2 + 0.5) ** 2 <= radius**2
    return np.broadcast_to(inside, shape).astype(np.uint8)


@pytest.fixture
def ct() -> Volume:
    """A 4 x 6 x 8 CT volume with distinct values from -1000 to about 1000 HU."""
    rng = np.random.default_rng(7)
    return make_volume(rng.uniform(-1000, 1000, size=(4, 6, 8)))


# --- registry and validation ---------------------------------------------------------------


def test_every_kind_in_yaml_has_an_implementation_and_back() -> None:
    union = typing.get_args(typing.get_args(StepConfig)[0])
    kinds = {model.model_fields["kind"].default for model in union}
    assert kinds == set(STEPS)
    assert kinds == {
        "hu",
        "suv",
        "window",
        "normalize",
        "resample",
        "resize",
        "crop_pad",
        "register",
        "stack",
    }


def test_all_names_the_public_api() -> None:
    public = {
        name
        for name, value in vars(steps_package).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(steps_package.__all__) == public - {"annotations"}


YAML_STEPS = """
steps:
  - {kind: hu}
  - {kind: resample, spacing: [null, 1.0, 1.0]}
  - {kind: resize, rows: 4, columns: 4}
  - {kind: crop_pad, shape: [3, 4, 6], pad_value: -1024}
  - {kind: window, center: 40, width: 400, output: unit}
  - {kind: normalize, method: minmax, range: [0, 255], mask_min: 0.1}
  - {kind: normalize, method: zscore}
  - kind: stack
    channels:
      - {center: 40, width: 400}
      - {center: 500, width: 2000}
"""


def test_a_pipeline_yaml_step_list_validates_builds_and_runs(ct: Volume) -> None:
    configs = parse_steps(yaml.safe_load(YAML_STEPS)["steps"])
    assert [config.kind for config in configs] == [
        "hu",
        "resample",
        "resize",
        "crop_pad",
        "window",
        "normalize",
        "normalize",
        "stack",
    ]
    result, trace = run_steps(ct, build_steps(configs))
    assert result.array.shape == (3, 4, 6, 2)
    labels = np.ones(result.array.shape[:3], dtype=np.uint8)
    assert restore(labels, trace).shape == ct.shape


@pytest.mark.parametrize(
    ("raw", "location", "error_type"),
    [
        ({"kind": "windw", "center": 40, "width": 400}, (0,), "union_tag_invalid"),
        ({"center": 40, "width": 400}, (0,), "union_tag_not_found"),
        ({"kind": "window", "center": 40}, (0, "window", "width"), "missing"),
        (
            {"kind": "window", "center": "forty", "width": 400},
            (0, "window", "center"),
            "float_type",
        ),
        ({"kind": "window", "center": "40", "width": 400}, (0, "window", "center"), "float_type"),
        ({"kind": "window", "center": True, "width": 400}, (0, "window", "center"), "float_type"),
        ({"kind": "window", "center": 40, "width": 0}, (0, "window", "width"), "greater_than"),
        (
            {"kind": "window", "center": 40, "width": 4, "level": 3},
            (0, "window", "level"),
            "extra_forbidden",
        ),
        (
            {"kind": "window", "center": 40, "width": 4, "output": "byte"},
            (0, "window", "output"),
            "literal_error",
        ),
        ({"kind": "resize", "rows": 256.0, "columns": 256}, (0, "resize", "rows"), "int_type"),
        ({"kind": "resize", "rows": 256}, (0, "resize", "columns"), "missing"),
        ({"kind": "resample", "spacing": [1, 1]}, (0, "resample", "spacing", 2), "missing"),
        (
            {"kind": "resample", "spacing": [1, -1, 1]},
            (0, "resample", "spacing", 1),
            "greater_than",
        ),
        ({"kind": "crop_pad", "shape": [256]}, (0, "crop_pad", "shape"), "too_short"),
        ({"kind": "crop_pad", "shape": [1, 2, 3, 4]}, (0, "crop_pad", "shape"), "too_long"),
        ({"kind": "normalize"}, (0, "normalize", "method"), "missing"),
        (
            {"kind": "normalize", "method": "zscore", "range": [0, 1]},
            (0, "normalize"),
            "value_error",
        ),
        (
            {"kind": "normalize", "method": "minmax", "range": [1, 0]},
            (0, "normalize"),
            "value_error",
        ),
        ({"kind": "stack", "channels": []}, (0, "stack", "channels"), "too_short"),
        ({"kind": "hu", "makes_channels": True}, (0, "hu", "makes_channels"), "extra_forbidden"),
    ],
)
def test_invalid_step_parameters_name_the_step_and_key(
    raw: dict[str, Any], location: tuple[Any, ...], error_type: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_steps([raw])
    errors = caught.value.errors()
    assert (errors[0]["loc"], errors[0]["type"]) == (location, error_type)


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="'hu', 'suv', 'window'"):
        parse_steps([{"kind": "rotate"}])


def test_only_the_last_step_may_make_channels(ct: Volume) -> None:
    raw = [{"kind": "stack", "channels": [{"center": 0, "width": 10}]}, {"kind": "hu"}]
    with pytest.raises(ValidationError, match=r"step 1 \(stack\) makes channels"):
        parse_steps(raw)
    configs = [parse_steps(raw[:1])[0], parse_steps(raw[1:])[0]]
    with pytest.raises(ConfigError, match=r"step 1 \(stack\) makes channels"):
        build_steps(configs)
    stack, hu = build_steps(configs[:1])[0], build_steps(configs[1:])[0]
    with pytest.raises(StepError, match="hu comes after a step that made channels"):
        run_steps(ct, [stack, hu])


# --- every step: shapes and restoration --------------------------------------------------

# ``register`` needs a template file and a volume large enough for its pyramid, so
# test_register_step.py runs these same checks on it.
WITH_FILES = {"register"}

MINIMAL: dict[str, dict[str, Any]] = {
    "hu": {"kind": "hu"},
    "suv": {"kind": "suv"},
    "window": {"kind": "window", "center": 40, "width": 400},
    "normalize": {"kind": "normalize", "method": "zscore"},
    "resample": {"kind": "resample", "spacing": [2.0, 1.1, 0.5]},
    "resize": {"kind": "resize", "rows": 9, "columns": 5},
    "crop_pad": {"kind": "crop_pad", "shape": [5, 3, 11]},
    "stack": {"kind": "stack", "channels": [{"center": 40, "width": 400}]},
}

PET_METADATA = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "CorrectedImage": ["ATTN", "DECY"],
    "PatientWeight": 75.0,
    "RadionuclideTotalDose": 370e6,
    "RadionuclideHalfLife": 6586.2,
    "SeriesDate": "20240301",
    "SeriesTime": "100000",
    "AcquisitionDate": "20240301",
    "AcquisitionTime": "100000",
    "RadiopharmaceuticalStartTime": "090000",
}


def test_minimal_examples_cover_every_kind() -> None:
    assert set(MINIMAL) == set(STEPS) - WITH_FILES


@pytest.mark.parametrize("kind", sorted(MINIMAL))
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_, np.float32])
def test_each_step_maps_results_back_to_the_source_grid(
    kind: str, dtype: type[np.generic], ct: Volume
) -> None:
    volume = ct
    if kind == "suv":
        volume = make_volume(np.abs(ct.array), units="BQML", modality="PT")
        volume = volume.with_array(volume.array, metadata=PET_METADATA)
    result, trace = run_steps(volume, [one(MINIMAL[kind])])
    assert result.array.dtype == np.float32
    grid = result.array.shape[:3]
    labels = (np.arange(np.prod(grid)).reshape(grid) % 2).astype(dtype)
    restored = restore(labels, trace)
    assert restored.shape == volume.shape
    assert restored.dtype == dtype
    if np.issubdtype(dtype, np.floating):
        assert restored.min() >= 0.0 and restored.max() <= 1.0
    else:
        assert set(np.unique(restored)) <= {0, 1}


@pytest.mark.parametrize("kind", sorted(set(MINIMAL) - {"resample", "resize", "crop_pad"}))
def test_value_steps_keep_grid_refs_and_identity_restore(kind: str, ct: Volume) -> None:
    volume = ct.with_array(np.abs(ct.array), metadata=PET_METADATA)
    if kind == "suv":
        volume = volume.with_array(volume.array, units="BQML")
    result, trace = run_steps(volume, [one(MINIMAL[kind])])
    assert result.array.shape[:3] == volume.shape
    assert (result.geometry, result.refs) == (volume.geometry, volume.refs)
    labels = np.random.default_rng(1).integers(0, 4, size=volume.shape)
    assert restore(labels, trace) is labels


def test_restore_refuses_labels_of_another_grid(ct: Volume) -> None:
    _, trace = run_steps(ct, [one({"kind": "resize", "rows": 3, "columns": 4})])
    with pytest.raises(StepError, match=r"does not start with the model input's grid \(4, 3, 4\)"):
        restore(np.zeros((4, 6, 8), dtype=np.uint8), trace)


def test_restore_carries_trailing_axes(ct: Volume) -> None:
    _, trace = run_steps(
        ct,
        build_steps(
            parse_steps(
                [
                    {"kind": "resize", "rows": 12, "columns": 16},
                    {"kind": "crop_pad", "shape": [10, 10]},
                    {"kind": "resample", "spacing": [1.25, None, None]},
                ]
            )
        ),
    )
    probabilities = np.full((*trace.result.array.shape[:3], 3), 0.25, dtype=np.float32)
    restored = restore(probabilities, trace)
    assert restored.shape == (4, 6, 8, 3)
    assert restored.dtype == np.float32


def test_the_trace_keeps_grids_not_voxels(ct: Volume) -> None:
    _, trace = run_steps(ct, [one(MINIMAL["window"]), one(MINIMAL["resize"])])
    grids = [trace.source] + [g for e in trace.entries for g in (e.before, e.after)]
    assert all(grid.array.strides == (0, 0, 0) for grid in grids)
    assert trace.result.array.shape == (4, 9, 5)
    assert trace.result.geometry.spacing != ct.geometry.spacing


def test_no_steps_is_the_identity(ct: Volume) -> None:
    result, trace = run_steps(ct, [])
    assert result is ct
    labels = np.zeros(ct.shape, dtype=np.uint8)
    assert restore(labels, trace) is labels


# --- intensity steps -----------------------------------------------------------------------


def test_hu_accepts_hu_and_refuses_other_units(ct: Volume) -> None:
    assert one({"kind": "hu"}).apply(ct) is ct
    raw = make_volume(ct.array, units="US", modality="CT")
    with pytest.raises(StepError, match=r"hu needs CT values in HU; this CT is in 'US'"):
        one({"kind": "hu"}).apply(raw)


def test_window_clips_to_the_window() -> None:
    volume = make_volume([[[-1000.0, -160.0, 0.0, 40.0, 240.0, 3000.0]]])
    result = one({"kind": "window", "center": 40, "width": 400}).apply(volume)
    np.testing.assert_array_equal(result.array, [[[-160, -160, 0, 40, 240, 240]]])
    assert (result.units, result.array.dtype) == ("HU", np.float32)


def test_window_output_unit_maps_to_zero_one() -> None:
    volume = make_volume([[[-1000.0, -160.0, 0.0, 40.0, 240.0, 3000.0]]])
    result = one({"kind": "window", "center": 40, "width": 400, "output": "unit"}).apply(volume)
    np.testing.assert_allclose(result.array, [[[0, 0, 0.4, 0.5, 1, 1]]], atol=1e-7)
    assert result.units == "1"


@pytest.mark.parametrize(
    ("bounds", "expected"), [(None, [0, 0.25, 1]), ([0, 255], [0, 63.75, 255])]
)
def test_normalize_minmax(bounds: list[int] | None, expected: list[float]) -> None:
    config: dict[str, Any] = {"kind": "normalize", "method": "minmax"}
    if bounds is not None:
        config["range"] = bounds
    result = one(config).apply(make_volume([[[-100.0, 0.0, 300.0]]]))
    np.testing.assert_allclose(result.array, [[expected]], rtol=1e-6)
    assert result.units == "1"


def test_normalize_minmax_statistics_over_the_mask_clip_the_rest() -> None:
    volume = make_volume([[[-1000.0, -900.0, 0.0, 50.0, 100.0]]])
    config = {"kind": "normalize", "method": "minmax", "mask_min": -500}
    np.testing.assert_allclose(one(config).apply(volume).array, [[[0, 0, 0, 0.5, 1]]])


def test_normalize_zscore() -> None:
    values = np.random.default_rng(3).normal(40, 12, size=(3, 20, 20))
    result = one({"kind": "normalize", "method": "zscore"}).apply(make_volume(values))
    assert abs(float(result.array.mean())) < 1e-5
    assert float(result.array.std()) == pytest.approx(1.0, abs=1e-5)


def test_normalize_zscore_with_mask_min() -> None:
    volume = make_volume([[[-1000.0, -1000.0, 10.0, 20.0, 30.0]]])
    result = one({"kind": "normalize", "method": "zscore", "mask_min": -500}).apply(volume)
    std = float(np.std([10.0, 20.0, 30.0]))
    np.testing.assert_allclose(result.array[0, 0, 2:], [-10 / std, 0, 10 / std], rtol=1e-6)
    assert result.array[0, 0, 0] == pytest.approx(-1020 / std, rel=1e-6)


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_normalize_refuses_constant_volumes(method: str) -> None:
    with pytest.raises(StepError, match="every voxel is 7"):
        one({"kind": "normalize", "method": method}).apply(make_volume(np.full((2, 2, 2), 7.0)))


def test_normalize_refuses_an_empty_mask() -> None:
    with pytest.raises(StepError, match="no voxel is above mask_min 5"):
        one({"kind": "normalize", "method": "zscore", "mask_min": 5}).apply(
            make_volume(np.zeros((2, 2, 2)))
        )


def test_stack_puts_windows_on_a_trailing_channel_axis(ct: Volume) -> None:
    config = {
        "kind": "stack",
        "channels": [{"center": 40, "width": 400}, {"center": 400, "width": 1800}],
    }
    result = one(config).apply(ct)
    assert result.array.shape == (*ct.shape, 2)
    assert result.array.dtype == np.float32
    assert result.units == "1"
    for channel, (center, width) in enumerate([(40, 400), (400, 1800)]):
        window = {"kind": "window", "center": center, "width": width, "output": "unit"}
        np.testing.assert_allclose(result.array[..., channel], one(window).apply(ct).array)


def test_stack_with_output_clip_keeps_units(ct: Volume) -> None:
    config = {"kind": "stack", "output": "clip", "channels": [{"center": 0, "width": 100}]}
    result = one(config).apply(ct)
    assert result.units == "HU"
    assert result.array.min() >= -50 and result.array.max() <= 50


# --- resample ------------------------------------------------------------------------------


def test_resample_keeps_voxel_zero_and_interpolates_linearly() -> None:
    geometry = make_geometry((2.5, 0.8, 0.7))
    shape = (5, 11, 9)
    volume = make_volume(linear_field(geometry, shape), geometry=geometry)
    result = one({"kind": "resample", "spacing": [1.0, 1.5, 0.5]}).apply(volume)
    # (5 - 1) * 2.5 / 1.0 + 1 = 11; 10 * 0.8 / 1.5 = 5.33 -> 6; 8 * 0.7 / 0.5 + 1 = 12.2 -> 12
    assert result.shape == (11, 6, 12)
    assert result.geometry.origin == geometry.origin
    assert result.geometry.spacing == (1.0, 1.5, 0.5)
    expected = linear_field(result.geometry, result.shape)
    np.testing.assert_allclose(result.array, expected, rtol=1e-5, atol=1e-3)
    assert result.refs == volume.refs  # refs describe the source grid


def test_resample_null_keeps_an_axis(ct: Volume) -> None:
    result = one({"kind": "resample", "spacing": [None, 0.4, None]}).apply(ct)
    assert result.geometry.spacing == (2.5, 0.4, 0.7)
    assert result.shape == (4, 11, 8)
    np.testing.assert_array_equal(result.array[:, ::2, :], ct.array)


def test_resample_to_the_same_spacing_changes_nothing(ct: Volume) -> None:
    result = one({"kind": "resample", "spacing": [2.5, 0.8, 0.7]}).apply(ct)
    np.testing.assert_array_equal(result.array, ct.array)


@pytest.mark.parametrize("spacing", [[1.0, 0.5, 0.25], [4.0, 3.0, 2.0], [0.7, 1.3, 1.0]])
def test_resample_restore_returns_labels_to_the_source_grid(spacing: list[float]) -> None:
    geometry = make_geometry((2.0, 1.0, 1.0))
    labels_source = np.random.default_rng(2).integers(0, 4, size=(6, 16, 16)).astype(np.uint8)
    volume = make_volume(labels_source.astype(np.float32), geometry=geometry)
    result, trace = run_steps(volume, [one({"kind": "resample", "spacing": spacing})])
    # A perfect model: each resampled voxel gets the label of the nearest source voxel.
    predicted = labels_source
    for axis, (old, new) in enumerate(zip((2.0, 1.0, 1.0), spacing, strict=True)):
        nearest = np.floor(np.arange(result.shape[axis]) * new / old + 0.5).astype(int)
        predicted = predicted.take(nearest, axis=axis)
    restored = restore(predicted, trace)
    assert restored.shape == labels_source.shape
    if all(old % new == 0 for old, new in zip((2.0, 1.0, 1.0), spacing, strict=True)):
        np.testing.assert_array_equal(restored, labels_source)  # finer: every voxel survives
    else:
        assert (restored == labels_source).mean() > 0.2  # coarser: labels are lost, not moved


# --- resize --------------------------------------------------------------------------------


def test_resize_keeps_the_field_of_view() -> None:
    geometry = make_geometry((3.0, 0.8, 0.6))
    shape = (2, 20, 30)
    volume = make_volume(linear_field(geometry, shape), geometry=geometry)
    result = one({"kind": "resize", "rows": 10, "columns": 12}).apply(volume)
    assert result.shape == (2, 10, 12)
    assert result.geometry.spacing == pytest.approx((3.0, 1.6, 1.5))
    # The first new pixel's centre lies half a pixel (0.5 old) and 0.75 old pixels inside.
    first = geometry.affine() @ np.array([0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(result.geometry.origin, first[:3])
    expected = linear_field(result.geometry, result.shape)
    np.testing.assert_allclose(result.array, expected, rtol=1e-5, atol=1e-3)
    # The outer pixel edges coincide: the field of view is the same.
    old_edge = np.array([0, 20, 30]) * np.array(geometry.spacing)
    new_edge = np.array([0, 10, 12]) * np.array(result.geometry.spacing)
    np.testing.assert_allclose(old_edge, new_edge)


def test_resize_halving_averages_pixel_pairs() -> None:
    volume = make_volume(np.arange(16, dtype=np.float32).reshape(1, 4, 4))
    result = one({"kind": "resize", "rows": 2, "columns": 2}).apply(volume)
    np.testing.assert_allclose(result.array, [[[2.5, 4.5], [10.5, 12.5]]])


def test_a_disk_mask_predicted_on_256_slices_returns_to_512() -> None:
    mask = disk((2, 512, 512), radius=150.3)
    volume = make_volume(mask * 100.0 - 50.0, geometry=make_geometry((3.0, 0.5, 0.5)))
    resized, trace = run_steps(volume, [one({"kind": "resize", "rows": 256, "columns": 256})])
    assert resized.shape == (2, 256, 256)
    assert resized.geometry.spacing == (3.0, 1.0, 1.0)
    predicted = (resized.array > 0).astype(np.uint8)  # the "model": a threshold
    restored = restore(predicted, trace)
    assert restored.shape == (2, 512, 512)
    assert restored.dtype == np.uint8
    assert dice(restored, mask) > 0.995
    # A probability map comes back linearly and stays a probability.
    probability = np.clip(resized.array / 100.0 + 0.5, 0, 1).astype(np.float32)
    restored_probability = restore(probability, trace)
    assert restored_probability.min() >= 0 and restored_probability.max() <= 1
    assert dice(restored_probability > 0.5, mask) > 0.995


def test_resize_up_then_restore_is_exact_for_labels() -> None:
    labels_source = np.random.default_rng(5).integers(0, 5, size=(2, 7, 9)).astype(np.int16)
    volume = make_volume(labels_source.astype(np.float32))
    _, trace = run_steps(volume, [one({"kind": "resize", "rows": 21, "columns": 27})])
    # Each source pixel became a 3 x 3 block; a perfect model returns those labels.
    predicted = labels_source.repeat(3, axis=1).repeat(3, axis=2)
    np.testing.assert_array_equal(restore(predicted, trace), labels_source)


# --- crop_pad ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ([2, 4], (4, 2, 4)),  # crop y and x, keep z
        ([5, 9, 13], (5, 9, 13)),  # pad all
        ([None, 3, 11], (4, 3, 11)),  # keep z, crop y by an odd count, pad x by an odd count
        ([4, 6, 8], (4, 6, 8)),  # nothing to do
    ],
)
def test_crop_pad_restore_is_exact(shape: list[int | None], expected: tuple[int, ...]) -> None:
    geometry = make_geometry()
    volume = make_volume(linear_field(geometry, (4, 6, 8)), geometry=geometry)
    result, trace = run_steps(volume, [one({"kind": "crop_pad", "shape": shape})])
    assert result.shape == expected
    # Voxels kept hold the same values at the same patient positions (the field is linear).
    field_after = linear_field(result.geometry, result.shape)
    inside = _inside(volume.shape, result.shape)
    np.testing.assert_allclose(result.array[inside], field_after[inside], atol=1e-3)
    # Labels computed on the cropped/padded grid come back exactly, zero where cropped away.
    labels_source = np.random.default_rng(11).integers(1, 6, size=(4, 6, 8)).astype(np.uint8)
    step = trace.entries[0].step
    labels_after = step.apply(make_volume(labels_source, geometry=geometry)).array.astype(np.uint8)
    restored = restore(labels_after, trace)
    kept_source = restore(np.ones(result.shape, dtype=np.uint8), trace).astype(bool)
    np.testing.assert_array_equal(restored[kept_source], labels_source[kept_source])
    assert (restored[~kept_source] == 0).all()


def _inside(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[slice, ...]:
    """The part of the new grid that holds source voxels (not padding)."""
    cuts = []
    for size_old, size_new in zip(old, new, strict=True):
        pad = max(size_new - size_old, 0)
        start = pad // 2
        cuts.append(slice(start, start + min(size_old, size_new)))
    return tuple(cuts)


def test_crop_pad_centres_and_puts_the_odd_voxel_at_the_end() -> None:
    volume = make_volume(np.arange(5, dtype=np.float32).reshape(1, 1, 5))
    cropped = one({"kind": "crop_pad", "shape": [1, 2]}).apply(volume)
    np.testing.assert_array_equal(cropped.array, [[[1, 2]]])
    padded = one({"kind": "crop_pad", "shape": [1, 8], "pad_value": -1}).apply(volume)
    np.testing.assert_array_equal(padded.array, [[[-1, 0, 1, 2, 3, 4, -1, -1]]])


def test_crop_pad_pads_with_the_minimum_by_default(ct: Volume) -> None:
    result = one({"kind": "crop_pad", "shape": [8, 8]}).apply(ct)
    assert (result.array[:, 0, :] == ct.array.min()).all()


def test_crop_pad_restore_exact_for_a_crop_of_512(ct: Volume) -> None:
    mask = disk((3, 512, 512), radius=120)
    volume = make_volume(mask.astype(np.float32), geometry=make_geometry((3.0, 0.5, 0.5)))
    result, trace = run_steps(volume, [one({"kind": "crop_pad", "shape": [320, 300]})])
    predicted = (result.array > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(restore(predicted, trace), mask)


# --- composed ------------------------------------------------------------------------------


def test_a_disk_survives_resample_resize_and_crop_pad() -> None:
    mask = disk((6, 128, 128), radius=40)
    geometry = make_geometry((2.0, 0.9, 0.9))
    volume = make_volume(mask * 1000.0 - 500.0, geometry=geometry)
    pipeline = build_steps(
        parse_steps(
            [
                {"kind": "resample", "spacing": [1.0, 0.6, 0.6]},
                {"kind": "resize", "rows": 96, "columns": 96},
                {"kind": "crop_pad", "shape": [12, 100, 90], "pad_value": -500},
                {"kind": "window", "center": 0, "width": 1000, "output": "unit"},
            ]
        )
    )
    result, trace = run_steps(volume, pipeline)
    predicted = (result.array > 0.5).astype(np.uint8)
    restored = restore(predicted, trace)
    assert restored.shape == mask.shape
    assert dice(restored, mask) > 0.97
