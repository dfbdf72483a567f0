"""PixelMed's DicomSRValidator reports no error on the SRs of the CT and PET pipelines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset
from tissues import ALGORITHM, TISSUES

from dicomnode.phantom.pet import PETPhantomSpec, write_pet_phantom
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.engine import PipelineEngine
from dicomnode.results import Measurement, SegmentMeasurements, save, write_seg, write_sr
from dicomnode.runners import ModelHost
from dicomnode.testing.pixelmed import pixelmed_java, sr_errors
from dicomnode.testing.result_files import write_result_files


@pytest.fixture(scope="module")
def validate() -> Callable[[Path], None]:
    java = pixelmed_java()
    if java is None:
        pytest.skip("PixelMed's DicomSRValidator (apt-get install pixelmed-apps) is not installed")

    def check(path: Path) -> None:
        errors, report = sr_errors(path, java)
        assert not errors, report

    return check


def test_the_pet_pipeline_sr_has_no_template_error(
    tmp_path: Path, validate: Callable[[Path], None]
) -> None:
    models, pipelines = reference_definitions()
    pet = write_pet_phantom(tmp_path / "pet", PETPhantomSpec())
    with ModelHost({"pet-suv-reference": models["pet-suv-reference"]}, tmp_path) as host:
        engine = PipelineEngine({"pet": pipelines["pet-suv-reference"]}, host)
        result = engine.run("pet", pet.paths)
    (sr,) = [d for d in result.datasets if d.Modality == "SR"]
    validate(save(sr, tmp_path / "out"))


def test_a_ct_report_of_several_segments_has_no_template_error(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    validate: Callable[[Path], None],
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    measured = [SegmentMeasurements(s.label, [Measurement.volume_ml(1.5)]) for s in TISSUES]
    sr = write_sr(
        ct_images,
        seg,
        tissue_labels,
        TISSUES,
        ALGORITHM,
        series_number=102,
        measurements=measured,
    )
    validate(save(sr, tmp_path))


def test_a_ct_report_of_one_segment_has_no_template_error(
    tmp_path: Path, validate: Callable[[Path], None]
) -> None:
    validate(write_result_files(tmp_path).sr)


def test_a_report_of_nothing_found_has_no_template_error(
    ct_images: list[Dataset], tmp_path: Path, validate: Callable[[Path], None]
) -> None:
    empty = np.zeros((len(ct_images), ct_images[0].Rows, ct_images[0].Columns), dtype=np.uint8)
    sr = write_sr(ct_images, None, empty, TISSUES, ALGORITHM, series_number=102)
    validate(save(sr, tmp_path))


@pytest.mark.parametrize("present", [(1, 2, 4), (4,)], ids=["three", "one"])
def test_a_report_with_absent_segments_has_no_template_error(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    validate: Callable[[Path], None],
    present: tuple[int, ...],
) -> None:
    """The absent ones are TID 1500's Qualitative Evaluations, beside the groups."""
    labels = np.where(np.isin(tissue_labels, present), tissue_labels, 0).astype(np.uint8)
    seg = write_seg(ct_images, labels, TISSUES, ALGORITHM, series_number=101)
    sr = write_sr(ct_images, seg, labels, TISSUES, ALGORITHM, series_number=102)
    validate(save(sr, tmp_path))
