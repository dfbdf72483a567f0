"""The summary image: a valid Secondary Capture in the source's study, with each region's
outline on its largest slice, the SR's values and the provenance burned in, and no
patient identifier drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage
from tissues import ALGORITHM, TISSUES, Validator

from dicomnode.results import Finding, Measurement, SegmentMeasurements, SegmentSpec, codes, save
from dicomnode.results.labelmap import LabelMap
from dicomnode.results.provenance import Provenance
from dicomnode.results.sources import prepare_sources
from dicomnode.results.summary_image import (
    NOTHING_FOUND,
    REFERENCE_LABEL,
    picture,
    write_summary_image,
)
from dicomnode.results.summary_picture import BACKGROUND, nearest, outline

PROVENANCE = Provenance("ab" * 32, "cd" * 32, "rules-7")
# Patient identifiers no picture may show, each a string found nowhere else.
IDENTIFIERS = {
    "PatientName": "Quintessa^Zzyzxwvutsrq",
    "PatientID": "PID-88421-UNIQUE",
    "PatientBirthDate": "19020304",
    "AccessionNumber": "ACC-55310-UNIQUE",
}


def _hu(images: list[Dataset]) -> npt.NDArray[np.float64]:
    return np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in images]
    )


def _measured(labels: npt.NDArray[Any], hu: npt.NDArray[Any]) -> list[SegmentMeasurements]:
    out = []
    for spec in TISSUES:
        region = hu[labels == spec.label]
        if region.size:
            out.append(
                SegmentMeasurements(
                    spec.label,
                    [
                        Measurement.volume_ml(region.size * 0.216),
                        Measurement.mean_hu(float(region.mean())),
                        Measurement.max_hu(float(region.max())),
                    ],
                )
            )
    return out


def _summary(images: list[Dataset], labels: npt.NDArray[Any], **extra: Any) -> tuple[Dataset, Any]:
    hu = _hu(images)
    arguments: dict[str, Any] = {
        "labels": labels,
        "values": hu,
        "units": "HU",
        "segments": TISSUES,
        "measurements": _measured(labels, hu),
        "provenance": PROVENANCE,
        **extra,
    }
    ds = write_summary_image(images, ALGORITHM, series_number=9002, **arguments)
    arguments.pop("labels")
    arguments.pop("segments")
    drawn = picture(
        prepare_sources(images, labels.shape[0]),
        ALGORITHM,
        label_map=LabelMap.of(labels, TISSUES),
        **arguments,
    )
    return ds, drawn


def test_the_summary_is_a_valid_burned_in_secondary_capture_in_the_source_study(
    ct_images: list[Dataset],
    tissue_labels: npt.NDArray[np.uint8],
    tmp_path: Path,
    dciodvfy: Validator,
) -> None:
    ds, drawn = _summary(ct_images, tissue_labels)
    dciodvfy(save(ds, tmp_path))
    source = ct_images[0]
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.PatientID == source.PatientID  # the header, not the pixels, names the patient
    assert ds.SeriesNumber == 9002
    assert ds.SeriesDescription == f"{ALGORITHM.name} summary"
    assert ds.BurnedInAnnotation == "YES"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.ConversionType == "WSD"
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
    assert ds.Columns == 1024
    assert np.array_equal(ds.pixel_array, drawn.pixels)
    (equipment,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "dicomnode"]
    assert f"model_sha256 {PROVENANCE.model_sha256}" in equipment.ContributionDescription
    assert f"pipeline_sha256 {PROVENANCE.pipeline_sha256}" in equipment.ContributionDescription
    footer = " ".join(drawn.texts)
    for shown in ("abababababababab", "cdcdcdcdcdcdcdcd", "rules-7", PROVENANCE.node_version):
        assert shown in footer
    # The tiles' source images are named.
    uids = {str(d.SOPInstanceUID) for d in ct_images}
    assert {str(i.ReferencedSOPInstanceUID) for i in ds.SourceImageSequence} <= uids


def test_each_outline_lies_on_the_boundary_of_its_segment_on_its_largest_slice(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    ds, drawn = _summary(ct_images, tissue_labels)
    colors = {1: (255, 200, 0)}  # Fat's own; the others get distinct palette colours
    assert len(drawn.tiles) == 4
    seen: set[tuple[int, ...]] = set()
    for box in drawn.tiles:
        z = int(np.argmax((tissue_labels == box.label).sum(axis=(1, 2))))
        source = tissue_labels[z] == box.label
        rows, columns = source.shape
        mask = source[nearest(box.height, rows)][:, nearest(box.width, columns)]
        tile = drawn.pixels[box.top : box.top + box.height, box.left : box.left + box.width]
        colored = ~(tile[..., 0] == tile[..., 1]) | ~(tile[..., 1] == tile[..., 2])
        (color,) = {tuple(int(c) for c in px) for px in tile[colored]}
        assert color == colors.get(box.label, color)
        seen.add(color)
        # Every coloured pixel is in the mask, within two steps of a pixel outside it ...
        outside = ~np.pad(mask, 2, constant_values=False)
        near = outside.copy()
        for _ in range(2):
            grown = near.copy()
            grown[1:] |= near[:-1]
            grown[:-1] |= near[1:]
            grown[:, 1:] |= near[:, :-1]
            grown[:, :-1] |= near[:, 1:]
            near = grown
        near = near[2:-2, 2:-2]
        assert colored.any()
        assert not (colored & ~mask).any()
        assert not (colored & ~near).any()
        # ... and every mask pixel next to the outside is coloured: the line is closed.
        edge = mask & _touches_outside(mask)
        assert not (edge & ~colored).any()
    assert len(seen) == 4  # one distinct colour per segment
    assert ds.Rows == drawn.pixels.shape[0]


def _touches_outside(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    result: npt.NDArray[np.bool_] = ~inner
    return result


def test_the_table_shows_every_segment_with_the_srs_values_and_units(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    _, drawn = _summary(ct_images, tissue_labels)
    measured = {m.label: m.measurements for m in _measured(tissue_labels, _hu(ct_images))}
    for header in ("Region", "Volume (ml)", "Mean (HU)", "Max (HU)"):
        assert header in drawn.texts
    for spec in TISSUES:
        volume, mean, maximum = measured[spec.label]
        index = drawn.texts.index(spec.name, drawn.texts.index("Region"))
        assert drawn.texts[index : index + 4] == (
            spec.name,
            f"{volume.value:.1f}",
            f"{mean.value:.1f}",
            f"{maximum.value:.1f}",
        )
    table = drawn.pixels[drawn.table_top :]
    assert (table != np.asarray(BACKGROUND, dtype=np.uint8)).any(axis=-1).sum() > 1000


def test_no_patient_identifier_is_drawn(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8]
) -> None:
    for ds in ct_images:
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
    ds, drawn = _summary(ct_images, tissue_labels)
    assert str(ds.PatientName) == IDENTIFIERS["PatientName"]  # in the header, as it should
    everything = "\n".join(drawn.texts)
    for value in IDENTIFIERS.values():
        for part in value.split("^"):
            assert part not in everything


@pytest.mark.parametrize("reference", [True, False])
def test_a_reference_pipelines_summary_says_so_and_no_other_does(
    ct_images: list[Dataset], tissue_labels: npt.NDArray[np.uint8], reference: bool
) -> None:
    ds, drawn = _summary(ct_images, tissue_labels, reference=reference)
    assert (REFERENCE_LABEL in drawn.texts) is reference
    assert (ds.get("ImageComments") == REFERENCE_LABEL) is reference
    # The banner is a red band across the top.
    top = drawn.pixels[20, 900]
    assert (tuple(int(c) for c in top) == (200, 30, 30)) is reference


def test_a_summary_of_nothing_found_says_so_and_is_valid(
    ct_images: list[Dataset], tmp_path: Path, dciodvfy: Validator
) -> None:
    empty = np.zeros((len(ct_images), ct_images[0].Rows, ct_images[0].Columns), np.uint8)
    ds, drawn = _summary(ct_images, empty)
    dciodvfy(save(ds, tmp_path))
    assert drawn.tiles == ()
    assert NOTHING_FOUND in drawn.texts
    assert "SourceImageSequence" not in ds
    for spec in TISSUES:
        assert spec.name in drawn.texts


def test_a_pet_summary_shows_suv_mtv_and_tlg(ct_images: list[Dataset]) -> None:
    lesion = SegmentSpec(1, "Lesion", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.LESION)
    labels = np.zeros((len(ct_images), ct_images[0].Rows, ct_images[0].Columns), np.uint8)
    labels[3, 20:30, 20:30] = 1
    suv = np.where(labels == 1, 6.0, 1.0)
    measured = SegmentMeasurements(
        1,
        [
            Measurement.suv_max(6.0),
            Measurement.suv_mean(5.5),
            Measurement.metabolic_volume_ml(21.6),
            Measurement.total_lesion_glycolysis(118.8),
        ],
    )
    drawn = picture(
        prepare_sources(ct_images, labels.shape[0]),
        ALGORITHM,
        label_map=LabelMap.of(labels, [lesion]),
        values=suv,
        units="SUVbw",
        measurements=[measured],
    )
    for header in ("SUVbw max (g/ml)", "SUVbw mean (g/ml)", "MTV (ml)", "TLG (g)"):
        assert header in drawn.texts
    for value in ("6.00", "5.50", "21.6", "118.8"):
        assert value in drawn.texts
    (box,) = drawn.tiles
    tile = drawn.pixels[box.top : box.top + box.height, box.left : box.left + box.width]
    # Inverted grey: the hot lesion is dark, the background (SUV 1) light.
    assert tile[0, 0].tolist() == [213, 213, 213]


def test_a_classifiers_summary_lists_its_findings(
    ct_images: list[Dataset], tmp_path: Path, dciodvfy: Validator
) -> None:
    hemorrhage = codes.Code("50960005", "SCT", "Hemorrhage")
    ds = write_summary_image(
        ct_images,
        ALGORITHM,
        series_number=9002,
        findings=[Finding(hemorrhage, 0.91)],
        provenance=PROVENANCE,
    )
    dciodvfy(save(ds, tmp_path))
    drawn = picture(
        prepare_sources(ct_images, None), ALGORITHM, findings=[Finding(hemorrhage, 0.91)]
    )
    assert drawn.texts[drawn.texts.index("Hemorrhage") :][:3] == (
        "Hemorrhage",
        "present",
        "0.910 (threshold 0.5)",
    )
    assert drawn.tiles == ()


def test_an_outline_is_the_inner_boundary_two_pixels_wide() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    ring = outline(mask)
    assert ring[2:8, 2:8].sum() == 36 - 4  # the 2x2 centre stays unmarked
    assert not ring[4:6, 4:6].any()
    assert not (ring & ~mask).any()
    edge = np.ones((4, 4), bool)  # touching the picture's edge: closed there
    assert outline(edge, width=1).sum() == 12
