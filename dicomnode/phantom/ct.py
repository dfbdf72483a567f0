"""A synthetic CT series of the abdomen, valid against the CT Image IOD (PS3.3 A.3).

The demo, the tests and the benchmarks need realistic data whose answer is known: every
slice is labelled by :mod:`dicomnode.phantom.anatomy`, drawn at textbook HU with optional
gaussian noise, and stored like a scanner does (unsigned 12 bits, slope 1, intercept -1024).
Everything, noise and UIDs included, follows from the spec, so the same spec gives the same
files byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import RE_VALID_UID, CTImageStorage
from pydicom.valuerep import DSfloat

from dicomnode.phantom.anatomy import NOMINAL_HU, Anatomy, Grid, Labels
from dicomnode.phantom.encoding import SeriesEncoder
from dicomnode.phantom.modules import PatientStudy, add_patient_and_study, file_meta
from dicomnode.phantom.truth import Tally, TissueHU, TissueVolumes
from dicomnode.phantom.uids import (
    derive_uid,
)

Stored = npt.NDArray[np.uint16]

RESCALE_INTERCEPT: Final = -1024
_BITS_STORED: Final = 12
_STORED_MAX: Final = 2**_BITS_STORED - 1
_MANUFACTURER: Final = "dicomnode phantom"
# PS3.5 6.2: LO and the component groups of PN hold 64 characters, CS 16 of [A-Z0-9 _].
_LO_MAX: Final = 64
_CS: Final = re.compile(r"[A-Z0-9 _]{1,16}")
_PRINTABLE: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]*")  # ASCII without the backslash


@dataclass(frozen=True, slots=True)
class CTPhantomSpec:
    """What to generate; checked on construction so bad values fail here, not in a writer."""

    slices: int = 40
    rows: int = 512
    columns: int = 512
    pixel_spacing_mm: float = 0.8  # row and column spacing
    slice_thickness_mm: float = 2.5  # also the spacing between slice centres
    seed: int = 0  # noise and UIDs are deterministic from the seed
    series_description: str = "PHANTOM CT ABDOMEN"
    body_part: str = "ABDOMEN"
    patient_name: str = "PHANTOM^CT"  # synthetic, never real
    patient_id: str = "PHANTOM-0001"
    noise_hu: float = 0.0  # gaussian sigma in HU; the tissue ranges hold up to ~10
    series_number: int = 1
    study_datetime: datetime = datetime(2024, 1, 15, 9, 30)  # naive: DICOM DA/TM are local

    def __post_init__(self) -> None:
        for name in ("slices", "rows", "columns", "series_number"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rows > 0xFFFF or self.columns > 0xFFFF:
            raise ValueError("rows and columns must be at most 65535, the largest US value")
        if self.pixel_spacing_mm <= 0 or self.slice_thickness_mm <= 0:
            raise ValueError("pixel_spacing_mm and slice_thickness_mm must be positive")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        if self.noise_hu < 0:
            raise ValueError(f"noise_hu must not be negative, got {self.noise_hu}")
        if not _CS.fullmatch(self.body_part):
            raise ValueError(f"body_part must be a DICOM CS value, got {self.body_part!r}")
        for name in ("series_description", "patient_id", "patient_name"):
            value: str = getattr(self, name)
            groups = value.split("=") if name == "patient_name" else [value]
            if not _PRINTABLE.fullmatch(value) or any(len(g) > _LO_MAX for g in groups):
                raise ValueError(
                    f"{name} must be printable ASCII without '\\', at most 64 characters"
                )

    @property
    def grid(self) -> Grid:
        return Grid(
            slices=self.slices,
            rows=self.rows,
            columns=self.columns,
            pixel_spacing_mm=self.pixel_spacing_mm,
            slice_thickness_mm=self.slice_thickness_mm,
        )


@dataclass(frozen=True, slots=True)
class CTPhantomSeries:
    """What :func:`write_ct_phantom` wrote, and the answer a model should find in it."""

    paths: tuple[Path, ...]  # one per slice, in slice order (cranial first)
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    truth: TissueVolumes
    mean_hu: TissueHU
    spec: CTPhantomSpec


@dataclass(frozen=True, slots=True)
class _SeriesUIDs:
    study: str
    series: str
    frame_of_reference: str


def _patient_study(spec: CTPhantomSpec) -> PatientStudy:
    return PatientStudy(
        patient_name=spec.patient_name,
        patient_id=spec.patient_id,
        study_date=spec.study_datetime.strftime("%Y%m%d"),
        study_time=spec.study_datetime.strftime("%H%M%S"),
        study_description=f"PHANTOM CT {spec.body_part}",
    )


def _series_uids(spec: CTPhantomSpec, study_instance_uid: str | None) -> _SeriesUIDs:
    """Study from seed, patient and study; series from the whole spec, so none collide."""
    given = study_instance_uid
    if given is not None and (len(given) > 64 or not RE_VALID_UID.fullmatch(given)):  # PS3.5 9.1
        raise ValueError(f"study_instance_uid is not a valid UID: {study_instance_uid!r}")
    study = study_instance_uid or _patient_study(spec).derive_study_uid(spec.seed)
    return _SeriesUIDs(
        study=study,
        series=derive_uid("series", study, repr(spec)),
        frame_of_reference=derive_uid("frame-of-reference", study, str(spec.seed)),
    )


# Stored value of each label (PS3.3 C.11.1.1.2: HU = stored * slope + intercept).
_NOMINAL_STORED: Final = (NOMINAL_HU.astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)


def _stored_pixels(spec: CTPhantomSpec, labels: Labels, index: int) -> Stored:
    """The slice as stored; each slice's noise has its own stream, so slices are lazy."""
    stored: Stored = _NOMINAL_STORED[labels]
    if spec.noise_hu == 0:
        return stored
    rng = np.random.default_rng([spec.seed, index])
    noisy = rng.standard_normal(labels.shape, dtype=np.float32)
    noisy *= np.float32(spec.noise_hu)
    noisy += stored
    np.rint(noisy, out=noisy)
    np.clip(noisy, 0, _STORED_MAX, out=noisy)
    return noisy.astype(np.uint16)


def _slices(spec: CTPhantomSpec) -> Iterator[tuple[int, Labels, Stored]]:
    anatomy = Anatomy(spec.grid)
    for index in range(spec.slices):
        labels = anatomy.labels(index)
        yield index, labels, _stored_pixels(spec, labels, index)


def _ds(value: float) -> DSfloat:
    """A DS value within the 16 characters PS3.5 allows, whatever the float."""
    return DSfloat(value, auto_format=True)


def _shared_dataset(spec: CTPhantomSpec, uids: _SeriesUIDs) -> Dataset:
    """All of a slice but its own elements; modules in the order of PS3.3 Table A.3-1."""
    grid = spec.grid
    date = spec.study_datetime.strftime("%Y%m%d")
    time = spec.study_datetime.strftime("%H%M%S")

    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    # Patient, General Study
    add_patient_and_study(ds, _patient_study(spec), uids.study)
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = spec.series_number
    ds.SeriesDate = date
    ds.SeriesTime = time
    ds.SeriesDescription = spec.series_description
    ds.BodyPartExamined = spec.body_part
    ds.PatientPosition = "HFS"
    # Frame of Reference
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = "dicomnode"
    ds.StationName = "PHANTOM"
    ds.ManufacturerModelName = "synthetic CT"
    ds.SoftwareVersions = "1"
    # General Acquisition, General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = date
    ds.AcquisitionTime = time
    ds.ContentDate = date
    ds.ContentTime = time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Plane (the slice's own position is added per slice)
    ds.PixelSpacing = [_ds(grid.pixel_spacing_mm), _ds(grid.pixel_spacing_mm)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = _ds(grid.slice_thickness_mm)
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS_STORED
    ds.HighBit = _BITS_STORED - 1
    ds.PixelRepresentation = 0
    # CT Image
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.ScanOptions = "HELICAL"
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = _ds(max(grid.rows, grid.columns) * grid.pixel_spacing_mm)
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 150
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    # VOI LUT: an abdominal soft-tissue window
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.WindowCenterWidthExplanation = "ABDOMEN"
    return ds


def _own_elements(
    spec: CTPhantomSpec, uids: _SeriesUIDs, index: int, stored: Stored
) -> tuple[FileMetaDataset, Dataset]:
    """The file meta and the elements that differ from slice to slice."""
    grid = spec.grid
    sop_instance_uid = derive_uid("instance", uids.series, str(index))
    x0, y0 = grid.origin_mm
    z = grid.slice_z_mm(index)

    meta = file_meta(CTImageStorage, sop_instance_uid)

    own = Dataset()
    own.SOPInstanceUID = sop_instance_uid
    own.InstanceNumber = index + 1
    own.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
    own.SliceLocation = _ds(z)
    # OW, not the dictionary's ambiguous "OB or OW": 16 bits allocated (PS3.5 8.2).
    own.add_new("PixelData", "OW", stored.astype("<u2", copy=False).tobytes())
    return meta, own


def ct_phantom_datasets(
    spec: CTPhantomSpec = CTPhantomSpec(), *, study_instance_uid: str | None = None
) -> Iterator[Dataset]:
    """The series in memory, file meta set, one slice at a time so none is kept."""
    uids = _series_uids(spec, study_instance_uid)
    for index, _labels, stored in _slices(spec):
        meta, own = _own_elements(spec, uids, index, stored)
        ds = _shared_dataset(spec, uids)  # built afresh: slices must not share elements
        ds.update(own)
        ds.file_meta = meta
        yield ds


def ct_phantom_truth(spec: CTPhantomSpec = CTPhantomSpec()) -> TissueVolumes:
    """The true volumes without generating any pixels."""
    anatomy = Anatomy(spec.grid)
    tally = Tally()
    for index in range(spec.slices):
        tally.add(anatomy.labels(index))
    return tally.volumes(spec.grid.voxel_ml)


def ct_file_name(number: int) -> str:
    """``ct_0001.dcm``: numbered, never named from a UID."""
    return f"ct_{number:04d}.dcm"


def write_ct_phantom(
    out_dir: Path,
    spec: CTPhantomSpec = CTPhantomSpec(),
    *,
    study_instance_uid: str | None = None,
    first_file_number: int = 1,
) -> CTPhantomSeries:
    """Write the series as ``ct_0001.dcm``... into ``out_dir`` and return its truth.

    The files are byte for byte what ``pydicom.dcmwrite`` makes of
    :func:`ct_phantom_datasets`, only faster. ``study_instance_uid`` puts several series
    in one study; ``first_file_number`` lets them share a folder without overwriting.
    """
    uids = _series_uids(spec, study_instance_uid)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = SeriesEncoder(_shared_dataset(spec, uids))
    tally = Tally()
    paths: list[Path] = []
    for index, labels, stored in _slices(spec):
        tally.add(labels)
        path = out_dir / ct_file_name(first_file_number + index)
        path.write_bytes(encoder.encode(*_own_elements(spec, uids, index, stored)))
        paths.append(path)
    return CTPhantomSeries(
        paths=tuple(paths),
        study_instance_uid=uids.study,
        series_instance_uid=uids.series,
        frame_of_reference_uid=uids.frame_of_reference,
        truth=tally.volumes(spec.grid.voxel_ml),
        mean_hu=tally.mean_hu(),
        spec=spec,
    )
