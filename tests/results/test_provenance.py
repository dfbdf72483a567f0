"""Every SEG and SR names the model file, the pipeline, the rules and the node version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from tissues import ALGORITHM, TISSUES, Validator

from dicomnode import __version__
from dicomnode.results import save, write_seg, write_sr
from dicomnode.results.provenance import Provenance

PROVENANCE = Provenance(model_sha256="a" * 64, pipeline_sha256="b" * 64, rules_version="c" * 64)
PARAMETERS = [
    f"model_sha256={'a' * 64}",
    f"pipeline_sha256={'b' * 64}",
    f"rules_version={'c' * 64}",
    f"dicomnode_version={__version__}",
]


def _ours(ds: Dataset) -> Dataset:
    (item,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
    return item


def _check_equipment(ds: Dataset) -> None:
    item = _ours(ds)
    (purpose,) = item.PurposeOfReferenceCodeSequence
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")
    assert item.SoftwareVersions == __version__
    for value in ("a" * 64, "b" * 64, "c" * 64, __version__):
        assert value in item.ContributionDescription


def test_seg_and_sr_name_model_pipeline_rules_and_node(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    seg = write_seg(
        ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101, provenance=PROVENANCE
    )
    assert seg is not None
    sr = write_sr(
        ct_images,
        seg,
        tissue_labels,
        TISSUES,
        ALGORITHM,
        series_number=102,
        provenance=PROVENANCE,
    )
    for ds in (seg, sr):
        dciodvfy(save(ds, tmp_path))
        _check_equipment(ds)

    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmName == ALGORITHM.name
        assert algorithm.AlgorithmVersion == ALGORITHM.version
        assert algorithm.AlgorithmParameters.split(",") == PARAMETERS

    (measurements,) = [i for i in sr.ContentSequence if _concept(i) == "126010"]
    groups = measurements.ContentSequence
    assert groups
    for group in groups:
        parameters = [i.TextValue for i in group.ContentSequence if _concept(i) == "111002"]
        assert parameters == PARAMETERS


def _concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def test_without_provenance_only_highdicom_is_named(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    seg = write_seg(ct_images, tissue_labels, TISSUES, ALGORITHM, series_number=101)
    assert seg is not None
    assert not [e for e in seg.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
    np.testing.assert_equal(len(seg.SegmentSequence), len(TISSUES))
