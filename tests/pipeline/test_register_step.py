"""The ``register`` step: a known affine recovered, the template's grid, labels brought back.

The source is an analytic phantom (a textured body with organs of distinct values)
sampled on an oblique grid; the template is the same phantom seen through a known
affine transform (rotation, translation, scaling), sampled on an axial grid of another
spacing and saved as NIfTI. Registering the source to it must find that transform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk  # noqa: N813 - the name its documentation and users know
import yaml
from pydantic import ValidationError

from dicomnode.config import Config
from dicomnode.errors import ConfigError, StepError
from dicomnode.node import check_config
from dicomnode.pipeline.loading import load_series
from dicomnode.pipeline.steps import build_steps, parse_steps, restore, run_steps
from dicomnode.pipeline.steps.itk_grid import image_of
from dicomnode.pipeline.steps.register import RegisterConfig
from dicomnode.pipeline.steps.trace import Trace
from dicomnode.volume import Geometry, SliceRef, Volume

Points = npt.NDArray[np.float64]

ROW = np.array([np.cos(0.2), np.sin(0.2), 0.0])
COLUMN = np.array([-np.sin(0.2) * np.cos(0.1), np.cos(0.2) * np.cos(0.1), np.sin(0.1)])
SOURCE = Geometry(
    origin=(-60.0, -66.0, -45.0),
    row_direction=(float(ROW[0]), float(ROW[1]), float(ROW[2])),
    column_direction=(float(COLUMN[0]), float(COLUMN[1]), float(COLUMN[2])),
    slice_direction=tuple(float(v) for v in np.cross(ROW, COLUMN)),  # type: ignore[arg-type]
    spacing=(3.0, 2.0, 2.0),
)
SOURCE_SHAPE = (32, 64, 64)
TEMPLATE = Geometry(
    origin=(-70.0, -70.0, -50.0),
    row_direction=(1.0, 0.0, 0.0),
    column_direction=(0.0, 1.0, 0.0),
    slice_direction=(0.0, 0.0, 1.0),
    spacing=(2.5, 2.5, 2.5),
)
TEMPLATE_SHAPE = (40, 56, 56)


def known_transform() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Template point p lies on source point M @ p + t: 6 degrees, 3 % scaling, 9 mm."""
    angle = np.radians(6.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]]
    )
    matrix = rotation @ np.diag([1.03, 0.97, 1.02])
    return matrix, np.array([6.0, -5.0, 4.0])


def ellipsoid(points: Points, centre: tuple[float, ...], radii: tuple[float, ...]) -> Points:
    """1 inside, 0 outside, with an edge about 2 mm wide (a scanner's blur): a smooth
    metric to optimise, as real images give."""
    r = np.linalg.norm((points - np.asarray(centre)) / np.asarray(radii), axis=-1)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(radii) / 0.6))


ORGAN = ((18.0, -12.0, 4.0), (14.0, 16.0, 18.0))


def organ(points: Points) -> npt.NDArray[np.bool_]:
    return ellipsoid(points, *ORGAN) >= 0.5


def phantom(points: Points) -> npt.NDArray[np.float32]:
    """HU at LPS points: air, a textured body, an organ, a cavity and a bony rod."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    body = ellipsoid(points, (0.0, 0.0, 0.0), (52.0, 40.0, 38.0))
    tissue = 40 + 25 * np.sin(x / 7) * np.cos(y / 9) + 0.4 * z
    organ_ = ellipsoid(points, *ORGAN)
    cavity = ellipsoid(points, (-17.0, 14.0, -9.0), (9.0, 8.0, 11.0))
    rod = ellipsoid(points, (0.0, 27.0, 0.0), (6.0, 5.0, 30.0))
    inside = tissue + organ_ * (180 - tissue) + cavity * (-120 - tissue) + rod * (700 - tissue)
    return (-1000.0 + body * (inside + 1000.0)).astype(np.float32)


def centres(geometry: Geometry, shape: tuple[int, int, int]) -> Points:
    """(z, y, x, 3): the LPS position of each voxel centre."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    affine = geometry.affine()
    return index @ affine[:3, :3].T + affine[:3, 3]


def write_image(path: Path, array: npt.NDArray[Any], geometry: Geometry) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(geometry.origin)
    dz, dy, dx = geometry.spacing
    image.SetSpacing((dx, dy, dz))
    directions = [geometry.row_direction, geometry.column_direction, geometry.slice_direction]
    image.SetDirection(tuple(float(v) for v in np.column_stack(directions).ravel()))
    sitk.WriteImage(image, str(path))
    return path


def make_source(geometry: Geometry = SOURCE) -> Volume:
    array = phantom(centres(geometry, SOURCE_SHAPE))
    refs = tuple(SliceRef("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{z}") for z in range(32))
    return Volume(array, geometry, refs, "CT", "HU", metadata={"Manufacturer": "phantom"})


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    matrix, shift = known_transform()
    points = centres(TEMPLATE, TEMPLATE_SHAPE) @ matrix.T + shift
    folder = tmp_path_factory.mktemp("templates")
    return write_image(folder / "template.nii.gz", phantom(points), TEMPLATE)


def register_to(template: Path, **options: Any) -> list[Any]:
    config = {"kind": "register", "template": template.name, **options}
    return build_steps(parse_steps([config]), template.parent)


@pytest.fixture(scope="module")
def registered(template: Path) -> tuple[Volume, Volume, Trace]:
    """The source, registered to the template with the defaults (once: about a second)."""
    source = make_source()
    result, trace = run_steps(source, register_to(template))
    return source, result, trace


def recorded_transform(volume: Volume) -> sitk.AffineTransform:
    record = volume.metadata["register"]
    transform = sitk.AffineTransform(3)
    transform.SetFixedParameters(record["fixed_parameters"])
    transform.SetParameters(record["parameters"])
    return transform


# Landmarks inside the body, in the template's space (LPS mm).
LANDMARKS = [(a, b, c) for a in (-25, 0, 25) for b in (-20, 0, 20) for c in (-15, 0, 15)]


def landmark_errors(volume: Volume) -> list[float]:
    """How far the recorded transform puts each landmark from where the known one does."""
    matrix, shift = known_transform()
    found = recorded_transform(volume)
    return [
        float(np.linalg.norm(np.subtract(found.TransformPoint(p), matrix @ p + shift)))
        for p in LANDMARKS
    ]


def test_correlation_recovers_the_known_affine(template: Path) -> None:
    result, _ = run_steps(make_source(), register_to(template, metric="correlation"))
    assert max(landmark_errors(result)) < 1.5


def test_mutual_information_recovers_it_to_a_few_mm(
    registered: tuple[Volume, Volume, Trace],
) -> None:
    # Mutual information is the cross-modality default; on this phantom's large even
    # regions its optimum is flatter than correlation's (on the real CT: 0.2 mm).
    _, result, _ = registered
    assert max(landmark_errors(result)) < 3.5
    record = result.metadata["register"]
    assert record["iterations"] > 0 and -1.0 <= record["metric_value"] < 0.0


def test_the_output_lies_on_the_template_grid(
    registered: tuple[Volume, Volume, Trace], template: Path
) -> None:
    source, result, _ = registered
    assert result.shape == TEMPLATE_SHAPE
    assert result.array.dtype == np.float32
    for got, want in zip(
        (result.geometry.origin, result.geometry.spacing, result.geometry.row_direction),
        (TEMPLATE.origin, TEMPLATE.spacing, TEMPLATE.row_direction),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert (result.refs, result.units, result.modality) == (source.refs, "HU", "CT")
    assert result.metadata["Manufacturer"] == "phantom"
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(template)))
    assert np.corrcoef(result.array.ravel(), expected.ravel())[0, 1] > 0.97
    # Outside the source: its minimum (air), not zero.
    assert result.array.min() == pytest.approx(source.array.min())


def dice(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def template_organ() -> npt.NDArray[np.bool_]:
    """The organ as the template shows it: a model's answer on the template grid."""
    matrix, shift = known_transform()
    return organ(centres(TEMPLATE, TEMPLATE_SHAPE) @ matrix.T + shift)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_])
def test_a_label_map_comes_back_onto_the_source(
    registered: tuple[Volume, Volume, Trace], dtype: type[np.generic]
) -> None:
    source, _, trace = registered
    labels = template_organ().astype(dtype)
    if dtype != np.bool_:
        labels *= 2
    restored = restore(labels, trace)
    assert restored.shape == source.shape and restored.dtype == dtype
    assert set(np.unique(restored)) <= set(np.unique(labels))  # nearest: no new labels
    assert dice(restored, organ(centres(SOURCE, SOURCE_SHAPE))) > 0.9


def test_probabilities_come_back_linearly_with_their_channels(
    registered: tuple[Volume, Volume, Trace],
) -> None:
    source, _, trace = registered
    inside = template_organ().astype(np.float32)
    probabilities = np.stack([1 - inside, inside], axis=-1)
    restored = restore(probabilities, trace)
    assert restored.shape == (*source.shape, 2) and restored.dtype == np.float32
    assert restored.min() >= 0.0 and restored.max() <= 1.0
    assert len(np.unique(restored[..., 1])) > 2  # interpolated, not nearest
    assert dice(restored[..., 1] >= 0.5, organ(centres(SOURCE, SOURCE_SHAPE))) > 0.9


def test_the_same_inputs_give_the_same_transform(template: Path) -> None:
    first, again = (run_steps(make_source(), register_to(template, iterations=20))[0] for _ in "ab")
    np.testing.assert_allclose(
        again.metadata["register"]["parameters"],
        first.metadata["register"]["parameters"],
        atol=1e-6,
    )


def test_a_tilted_stack_is_placed_exactly(tmp_path: Path) -> None:
    # A gantry tilt: slices shifted in-plane along y as they go; SimpleITK takes the
    # stacking direction as is (not orthogonal), so every voxel lands where DICOM says.
    tilted = Geometry(
        origin=(-60.0, -66.0, -45.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(3.0, 2.0, 2.0),
        shear=(0.0, float(np.tan(np.radians(15))), 0.0),
    )
    image = image_of(np.zeros(SOURCE_SHAPE, dtype=np.float32), tilted)
    for index in [(0, 0, 0), (63, 0, 31), (5, 40, 17)]:
        z, y, x = index[2], index[1], index[0]
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint(index), centres(tilted, SOURCE_SHAPE)[z, y, x]
        )


def test_an_irregular_stack_is_refused(template: Path) -> None:
    source = make_source()
    offsets = tuple(float(v) for v in np.arange(32) * 3.0 + np.r_[np.zeros(16), np.ones(16)])
    irregular = source.with_array(
        source.array, geometry=Geometry(**{**vars_of(SOURCE), "slice_offsets": offsets})
    )
    with pytest.raises(StepError, match="uneven distances"):
        run_steps(irregular, register_to(template))


def vars_of(geometry: Geometry) -> dict[str, Any]:
    return {name: getattr(geometry, name) for name in geometry.__slots__}


def test_a_featureless_template_fails_with_the_reason(tmp_path: Path) -> None:
    flat = write_image(tmp_path / "flat.nii.gz", np.zeros((16, 16, 16), np.float32), TEMPLATE)
    with pytest.raises(StepError, match="the template has one value everywhere"):
        run_steps(make_source(), register_to(flat))


# --- configuration ---------------------------------------------------------------------


def test_a_yaml_step_list_validates_with_defaults(template: Path) -> None:
    text = f"steps: [{{kind: hu}}, {{kind: register, template: {template.name}}}]"
    (_, config) = parse_steps(yaml.safe_load(text)["steps"])
    assert isinstance(config, RegisterConfig)
    assert (config.metric, config.optimizer, config.initialization) == (
        "mattes",
        "gradient_descent",
        "geometry",
    )
    assert config.template == Path(template.name)
    (_, step) = build_steps((parse_steps([{"kind": "hu"}])[0], config), template.parent)
    assert step.params.template == template


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metrik": "mattes"}, "metrik"),
        ({"metric": "demons"}, "metric"),
        ({"shrink_factors": [4, 2, 1], "smoothing_sigmas": [2.0, 0.0]}, "one of each per"),
        ({"sampling_fraction": 1.5}, "sampling_fraction"),
    ],
)
def test_bad_parameters_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_steps([{"kind": "register", "template": "t.nii.gz", **options}])


def test_a_missing_template_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    configs = parse_steps([{"kind": "hu"}, {"kind": "register", "template": "atlas.nii.gz"}])
    with pytest.raises(
        ConfigError, match=r"step 2 \(register\): template: .*atlas.nii.gz: no such"
    ):
        build_steps(configs, tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.nii.gz", b"not an image", "SimpleITK cannot read it"),
        ("slice.nii.gz", None, "3-D image"),
    ],
)
def test_an_unusable_template_is_a_config_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        sitk.WriteImage(sitk.Image(8, 8, sitk.sitkFloat32), str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        build_steps(parse_steps([{"kind": "register", "template": name}]), tmp_path)


def test_config_check_names_the_pipeline_step_and_missing_template(tmp_path: Path) -> None:
    segment = {"value": "1", "meaning": "x"}
    pipeline = {
        "steps": [{"kind": "hu"}, {"kind": "register", "template": "atlas.nii.gz"}],
        "model": "ct-tissue-reference",
        "output": {
            "kind": "segmentation",
            "segments": [{"label": 1, "name": "x", "category": segment, "type": segment}],
        },
        "algorithm": {"name": "x", "version": "1"},
    }
    config = Config(pipelines={"brain": pipeline}, base_dir=tmp_path, rules_dir=tmp_path / "r")
    with pytest.raises(ConfigError) as raised:
        check_config(config, "node.yaml")
    assert str(raised.value) == (
        f"node.yaml: pipelines.brain: step 2 (register): template: "
        f"{tmp_path / 'atlas.nii.gz'}: no such file"
    )


def test_the_real_ct_is_registered_to_a_moved_copy_of_itself(
    real_ct_images: list[Path], tmp_path: Path
) -> None:
    # Real anatomy and noise: mutual information finds the known affine well within a mm.
    (resize,) = build_steps(parse_steps([{"kind": "resize", "rows": 128, "columns": 128}]))
    source = resize.apply(load_series(real_ct_images).volume)
    image = image_of(source.array, source.geometry)
    matrix, shift = known_transform()
    moved = sitk.AffineTransform(3)
    moved.SetMatrix(matrix.ravel().tolist())
    moved.SetTranslation(shift.tolist())
    moved.SetCenter(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    template = sitk.Resample(image, image, moved, sitk.sitkLinear, float(source.array.min()))
    sitk.WriteImage(template, str(tmp_path / "template.mha"))
    result, _ = run_steps(source, register_to(tmp_path / "template.mha"))
    found = recorded_transform(result)
    size = template.GetSize()
    points = [
        template.TransformContinuousIndexToPhysicalPoint((size[0] * a, size[1] * b, size[2] * c))
        for a in (0.3, 0.5, 0.7)
        for b in (0.3, 0.5, 0.7)
        for c in (0.3, 0.5, 0.7)
    ]
    errors = [
        np.linalg.norm(np.subtract(found.TransformPoint(p), moved.TransformPoint(p)))
        for p in points
    ]
    assert max(errors) < 1.0, errors
