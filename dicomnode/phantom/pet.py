"""A synthetic FDG PET series with known uptake, valid against the PET Image IOD (PS3.3 A.21).

An SUV pipeline needs images whose SUVs are known: the body is an elliptic cylinder of
uniform uptake, the lesions are spheres of their own uptake, and nothing is blurred or
noisy, so every voxel holds one of the spec's SUVs. Values are written as a scanner writes
them: activity concentration in Bq/ml (Units BQML), decay corrected to the series start
(Decay Correction START, Series Time == Acquisition Time), as signed 16-bit integers with
a Rescale Slope per slice. :mod:`dicomnode.phantom.pet_uptake` gives the SUV formula.

The Bq/ml of SUV 1 is computed from the header values as written (DS and TM as a reader
parses them), so ``stored * slope`` converts back to the spec's SUV within
``SUVmax of the slice / (65534 * SUV)`` relative: the rounding to an integer.

``time_frames`` > 1 makes a dynamic series (Series Type DYNAMIC\\IMAGE, PS3.3 C.8.9.1):
that many frames of ``frame_duration_s`` back to back from the series start, each at the
same slice positions, Image Index (frame - 1) * Number of Slices + slice. The lesions take
up tracer over time: in frame f of F each lesion holds f / F of its SUV (the body keeps
its own), so the last frame is the static series' uptake and ``truth`` is measured on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import RE_VALID_UID, PositronEmissionTomographyImageStorage
from pydicom.valuerep import DSfloat

from dicomnode.phantom.anatomy import Grid
from dicomnode.phantom.encoding import SeriesEncoder
from dicomnode.phantom.modules import PatientStudy, add_patient_and_study, file_meta
from dicomnode.phantom.pet_uptake import (
    DEFAULT_SUV_THRESHOLD,
    Lesion,
    PETTruth,
    Stored,
    SUVTally,
    Uptake,
    bqml_per_suv,
    decode_suv,
    ds_value,
    quantise,
)
from dicomnode.phantom.uids import (
    derive_uid,
)

F18_HALF_LIFE_S: Final = 6586.2
_MANUFACTURER: Final = "dicomnode phantom"
# Codes of PS3.16 CID 4020 (radionuclide), CID 4021 (radiopharmaceutical), CID 19-21.
_F18: Final = ("77004003", "SCT", "^18^Fluorine")
_FDG: Final = ("35321007", "SCT", "Fluorodeoxyglucose F^18^")
_RECUMBENT: Final = ("102538003", "SCT", "recumbent")
_SUPINE: Final = ("40199007", "SCT", "supine")
_HEADFIRST: Final = ("102540008", "SCT", "headfirst")
_F18_POSITRON_FRACTION: Final = 0.9673  # beta+ branching of F-18 (NNDC)
# PS3.5 6.2: LO and the component groups of PN hold 64 characters.
_LO_MAX: Final = 64
_PRINTABLE: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]*")  # ASCII without the backslash


def _positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value}")


def _not_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must not be negative and must be finite, got {value}")


# Two lesions above the usual threshold of 2.5 and one below it, all inside the body and
# inside the 160 mm of the default series.
DEFAULT_LESIONS: Final = (
    Lesion(centre_mm=(-60.0, -10.0, 24.0), radius_mm=15.0, suv=6.0),
    Lesion(centre_mm=(55.0, 25.0, -20.0), radius_mm=10.0, suv=4.0),
    Lesion(centre_mm=(0.0, -60.0, 0.0), radius_mm=12.0, suv=2.0),
)


@dataclass(frozen=True, slots=True)
class PETPhantomSpec:
    """What to generate; checked on construction so bad values fail here, not in a writer."""

    slices: int = 40
    rows: int = 128
    columns: int = 128
    pixel_spacing_mm: float = 4.0  # row and column spacing
    slice_thickness_mm: float = 4.0  # also the spacing between slice centres
    seed: int = 0  # UIDs are deterministic from the seed
    patient_weight_kg: float = 75.0
    patient_size_m: float | None = 1.75
    injected_dose_bq: float = 370e6
    half_life_s: float = F18_HALF_LIFE_S
    # Naive: DICOM DA/TM are local. The study starts at the injection, so a pipeline that
    # decays to Study Time instead of Series Time is off by exp(ln 2 * 60 min / T).
    injection_datetime: datetime = datetime(2024, 1, 15, 9, 30)
    series_datetime: datetime = datetime(2024, 1, 15, 10, 30)  # also the acquisition start
    frame_duration_s: float = 180.0
    body_suv: float = 1.0
    body_semi_axes_mm: tuple[float, float] = (170.0, 120.0)  # as the CT phantom's body
    lesions: tuple[Lesion, ...] = DEFAULT_LESIONS
    series_description: str = "PHANTOM PET FDG"
    patient_name: str = "PHANTOM^PET"  # synthetic, never real
    patient_id: str = "PHANTOM-PET-0001"
    series_number: int = 1
    # Not in the repr, from which the series UID derives: a static spec keeps the UIDs
    # (and bytes) it had before dynamic series existed; a dynamic one adds it explicitly.
    time_frames: int = field(default=1, repr=False)

    def __post_init__(self) -> None:
        for name in ("slices", "rows", "columns", "series_number", "time_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if max(self.slices, self.rows, self.columns) > 0xFFFF:  # Number of Slices is US too
            raise ValueError("slices, rows and columns must be at most 65535, the largest US")
        if self.slices * self.time_frames > 0xFFFF:  # Image Index is US
            raise ValueError("slices * time_frames must be at most 65535, the largest US")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        for name in (
            "pixel_spacing_mm",
            "slice_thickness_mm",
            "patient_weight_kg",
            "injected_dose_bq",
            "half_life_s",
            "frame_duration_s",
        ):
            _positive(name, getattr(self, name))
        if self.patient_size_m is not None:
            _positive("patient_size_m", self.patient_size_m)
        _not_negative("body_suv", self.body_suv)
        for semi in self.body_semi_axes_mm:
            _positive("body_semi_axes_mm", semi)
        if self.frame_duration_ms < 1:
            raise ValueError("frame_duration_s must be at least 1 ms, what IS in ms can hold")
        if self.series_datetime < self.injection_datetime:
            raise ValueError("series_datetime must not be before injection_datetime")
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

    @property
    def dynamic(self) -> bool:
        return self.time_frames > 1

    @property
    def uptake_s(self) -> float:
        """Seconds from the injection to the series start, as TM and DT values hold them."""
        return (self.series_datetime - self.injection_datetime).total_seconds()

    @property
    def bqml_per_suv(self) -> float:
        """Bq/ml of SUV 1 at the series start, from the header values a reader parses."""
        return bqml_per_suv(
            float(ds_value(self.patient_weight_kg)),
            float(ds_value(self.injected_dose_bq)),
            self.uptake_s,
            float(ds_value(self.half_life_s)),
        )

    @property
    def voxel_ml(self) -> float:
        """Voxel volume from Pixel Spacing and Slice Thickness as written."""
        spacing = float(ds_value(self.pixel_spacing_mm))
        return spacing * spacing * float(ds_value(self.slice_thickness_mm)) / 1000.0

    @property
    def frame_duration_ms(self) -> int:
        """Actual Frame Duration (IS, in ms) as written."""
        return round(self.frame_duration_s * 1000.0)


@dataclass(frozen=True, slots=True)
class PETPhantomSeries:
    """What :func:`write_pet_phantom` wrote, and the answer an SUV pipeline should find."""

    # One per slice, in Image Index order: cranial first, time frame by time frame.
    paths: tuple[Path, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    truth: PETTruth  # at the threshold the writer was given; of the last time frame
    bqml_per_suv: float
    spec: PETPhantomSpec


@dataclass(frozen=True, slots=True)
class _SeriesUIDs:
    study: str
    series: str
    frame_of_reference: str


def _patient_study(spec: PETPhantomSpec) -> PatientStudy:
    """The study starts at the injection (see ``injection_datetime``)."""
    return PatientStudy(
        patient_name=spec.patient_name,
        patient_id=spec.patient_id,
        study_date=_da(spec.injection_datetime),
        study_time=_tm(spec.injection_datetime),
        study_description="PHANTOM PET WHOLEBODY",
        patient_weight_kg=ds_value(spec.patient_weight_kg),
        patient_size_m=None if spec.patient_size_m is None else ds_value(spec.patient_size_m),
    )


def _series_uids(spec: PETPhantomSpec, study_instance_uid: str | None) -> _SeriesUIDs:
    """As the CT phantom derives them: the study from seed, patient and study values."""
    given = study_instance_uid
    if given is not None and (len(given) > 64 or not RE_VALID_UID.fullmatch(given)):  # PS3.5 9.1
        raise ValueError(f"study_instance_uid is not a valid UID: {study_instance_uid!r}")
    study = study_instance_uid or _patient_study(spec).derive_study_uid(spec.seed)
    identity = repr(spec) + (f"time_frames={spec.time_frames}" if spec.dynamic else "")
    return _SeriesUIDs(
        study=study,
        series=derive_uid("series", study, identity),
        frame_of_reference=derive_uid("frame-of-reference", study, str(spec.seed)),
    )


def _da(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: datetime) -> str:
    """TM with a fraction only where there is one, so the default times read plainly."""
    return moment.strftime("%H%M%S.%f" if moment.microsecond else "%H%M%S")


@dataclass(frozen=True, slots=True)
class _Slice:
    index: int  # along z, 0 the most cranial
    stored: Stored
    slope: DSfloat  # Rescale Slope as written; float(slope) is what a reader multiplies by
    frame: int = 0  # the time frame, 0-based

    def image_index(self, slices: int) -> int:
        """PS3.3 C.8.9.4.1.9: (Time Slice Index - 1) * Number of Slices + Slice Index."""
        return self.frame * slices + self.index + 1


def _frame_lesions(spec: PETPhantomSpec, frame: int) -> tuple[Lesion, ...]:
    """The lesions of time frame ``frame``: f / F of their SUV (all of it when static)."""
    if frame == spec.time_frames - 1:
        return spec.lesions
    share = (frame + 1) / spec.time_frames
    return tuple(replace(lesion, suv=lesion.suv * share) for lesion in spec.lesions)


def _frame_slices(spec: PETPhantomSpec, frame: int) -> Iterator[_Slice]:
    lesions = _frame_lesions(spec, frame)
    uptake = Uptake(spec.grid, spec.body_semi_axes_mm, spec.body_suv, lesions)
    scale = spec.bqml_per_suv
    for index in range(spec.slices):
        stored, slope = quantise(uptake.suv(index) * scale)
        yield _Slice(index=index, stored=stored, slope=slope, frame=frame)


def _slices(spec: PETPhantomSpec) -> Iterator[_Slice]:
    """Every slice of every time frame, in Image Index order."""
    for frame in range(spec.time_frames):
        yield from _frame_slices(spec, frame)


def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _radiopharmaceutical(spec: PETPhantomSpec) -> Dataset:
    """The one item of the Radiopharmaceutical Information Sequence (PS3.3 C.8.9.2)."""
    item = Dataset()
    item.RadionuclideCodeSequence = [_code(_F18)]
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    item.RadiopharmaceuticalStartTime = _tm(spec.injection_datetime)
    item.RadiopharmaceuticalStartDateTime = spec.injection_datetime.strftime(
        "%Y%m%d%H%M%S.%f" if spec.injection_datetime.microsecond else "%Y%m%d%H%M%S"
    )
    item.RadionuclideTotalDose = ds_value(spec.injected_dose_bq)
    item.RadionuclideHalfLife = ds_value(spec.half_life_s)
    item.RadionuclidePositronFraction = ds_value(_F18_POSITRON_FRACTION)
    item.RadiopharmaceuticalCodeSequence = [_code(_FDG)]
    return item


def _frame_timing(spec: PETPhantomSpec, frame: int = 0) -> tuple[DSfloat, DSfloat]:
    """Decay Factor and Frame Reference Time (ms) of a time frame corrected to the start.

    The mean activity over a frame of length D is A0 (1 - e^-lD) / (lD), so the factor
    that restores A0 is lD / (1 - e^-lD), reached e^-lt = 1 / factor into the frame
    (PS3.3 C.8.9.4.1.5 and C.8.9.4.1.6). A later frame, starting s after the series start
    (Decay Correction START), is decayed e^-ls more: its factor is e^ls times that.
    """
    decay_constant = math.log(2) / float(ds_value(spec.half_life_s))
    decayed = decay_constant * spec.frame_duration_ms / 1000.0
    within = decayed / -math.expm1(-decayed)
    log_factor = math.log(within) + decay_constant * _frame_start_ms(spec, frame) / 1000.0
    return ds_value(math.exp(log_factor)), ds_value(log_factor / decay_constant * 1000.0)


def _frame_start_ms(spec: PETPhantomSpec, frame: int) -> int:
    """When a time frame starts, from the series start: frames lie back to back."""
    return frame * spec.frame_duration_ms


def _frame_start(spec: PETPhantomSpec, frame: int) -> datetime:
    return spec.series_datetime + timedelta(milliseconds=_frame_start_ms(spec, frame))


def _shared_dataset(spec: PETPhantomSpec, uids: _SeriesUIDs) -> Dataset:
    """All of a slice but its own elements; modules in the order of PS3.3 Table A.21.3-1."""
    grid = spec.grid
    series_date, series_time = _da(spec.series_datetime), _tm(spec.series_datetime)

    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.InstanceCreationDate = series_date
    ds.InstanceCreationTime = series_time
    # Patient, General Study, Patient Study
    add_patient_and_study(ds, _patient_study(spec), uids.study)
    # General Series
    ds.Modality = "PT"
    ds.SeriesInstanceUID = uids.series
    ds.SeriesNumber = spec.series_number
    ds.SeriesDate = series_date
    ds.SeriesTime = series_time
    ds.SeriesDescription = spec.series_description
    ds.BodyPartExamined = "WHOLEBODY"
    # PET Series
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["DYNAMIC" if spec.dynamic else "STATIC", "IMAGE"]
    if spec.dynamic:
        ds.NumberOfTimeSlices = spec.time_frames  # Type 1C: required for DYNAMIC
    ds.NumberOfSlices = grid.slices
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "measured, CT-based"
    ds.DecayCorrection = "START"
    ds.ReconstructionDiameter = ds_value(max(grid.rows, grid.columns) * grid.pixel_spacing_mm)
    ds.ReconstructionMethod = "OSEM"
    ds.CollimatorType = "NONE"
    ds.AcquisitionStartCondition = "MANU"
    ds.GantryDetectorTilt = 0
    # PET Isotope
    ds.RadiopharmaceuticalInformationSequence = [_radiopharmaceutical(spec)]
    # NM/PET Patient Orientation
    orientation = _code(_RECUMBENT)
    orientation.PatientOrientationModifierCodeSequence = [_code(_SUPINE)]
    ds.PatientOrientationCodeSequence = [orientation]
    ds.PatientGantryRelationshipCodeSequence = [_code(_HEADFIRST)]
    # Frame of Reference
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = "dicomnode"
    ds.StationName = "PHANTOM"
    ds.ManufacturerModelName = "synthetic PET"
    ds.SoftwareVersions = "1"
    # General Acquisition, General Image: one bed position; the acquisition date and time
    # (the start of the slice's time frame) are the slice's own
    ds.AcquisitionNumber = 1
    ds.ContentDate = series_date
    ds.ContentTime = series_time
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Plane (the slice's own position is added per slice)
    ds.PixelSpacing = [ds_value(grid.pixel_spacing_mm), ds_value(grid.pixel_spacing_mm)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = ds_value(grid.slice_thickness_mm)
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    # PET Image (Rescale Slope, Frame Reference Time and Decay Factor are the slice's own)
    ds.RescaleIntercept = 0
    ds.ActualFrameDuration = spec.frame_duration_ms
    return ds


def _own_elements(
    spec: PETPhantomSpec, uids: _SeriesUIDs, pet_slice: _Slice
) -> tuple[FileMetaDataset, Dataset]:
    """The file meta and the elements that differ from slice to slice."""
    grid = spec.grid
    index = pet_slice.index
    image_index = pet_slice.image_index(grid.slices)
    sop_instance_uid = derive_uid("instance", uids.series, str(image_index - 1))
    x0, y0 = grid.origin_mm
    z = grid.slice_z_mm(index)
    start = _frame_start(spec, pet_slice.frame)
    decay_factor, frame_reference_ms = _frame_timing(spec, pet_slice.frame)

    meta = file_meta(PositronEmissionTomographyImageStorage, sop_instance_uid)

    own = Dataset()
    own.SOPInstanceUID = sop_instance_uid
    own.AcquisitionDate = _da(start)
    own.AcquisitionTime = _tm(start)
    own.InstanceNumber = image_index
    own.ImagePositionPatient = [ds_value(x0), ds_value(y0), ds_value(z)]
    own.SliceLocation = ds_value(z)
    own.RescaleSlope = pet_slice.slope
    own.FrameReferenceTime = frame_reference_ms
    own.ImageIndex = image_index  # PS3.3 C.8.9.4.1.9; a static series: the slice index
    own.DecayFactor = decay_factor
    # OW, not the dictionary's ambiguous "OB or OW": 16 bits allocated (PS3.5 8.2).
    own.add_new("PixelData", "OW", pet_slice.stored.astype("<i2", copy=False).tobytes())
    return meta, own


def pet_phantom_datasets(
    spec: PETPhantomSpec = PETPhantomSpec(), *, study_instance_uid: str | None = None
) -> Iterator[Dataset]:
    """The series in memory, file meta set, one slice at a time so none is kept."""
    uids = _series_uids(spec, study_instance_uid)
    for pet_slice in _slices(spec):
        meta, own = _own_elements(spec, uids, pet_slice)
        ds = _shared_dataset(spec, uids)  # built afresh: slices must not share elements
        ds.update(own)
        ds.file_meta = meta
        yield ds


def pet_truth(
    spec: PETPhantomSpec = PETPhantomSpec(), threshold: float = DEFAULT_SUV_THRESHOLD
) -> PETTruth:
    """The region SUV >= ``threshold``, measured on the values the files decode to.

    Of the last time frame, where a dynamic series has several: the static uptake.
    """
    tally = SUVTally(threshold)
    for pet_slice in _frame_slices(spec, spec.time_frames - 1):
        tally.add(decode_suv(pet_slice.stored, pet_slice.slope, spec.bqml_per_suv))
    return tally.truth(spec.voxel_ml)


def pet_file_name(number: int) -> str:
    """``pt_0001.dcm``: numbered, never named from a UID."""
    return f"pt_{number:04d}.dcm"


def write_pet_phantom(
    out_dir: Path,
    spec: PETPhantomSpec = PETPhantomSpec(),
    *,
    study_instance_uid: str | None = None,
    first_file_number: int = 1,
    threshold: float = DEFAULT_SUV_THRESHOLD,
) -> PETPhantomSeries:
    """Write the series as ``pt_0001.dcm``... into ``out_dir`` and return its truth.

    The files are byte for byte what ``pydicom.dcmwrite`` makes of
    :func:`pet_phantom_datasets`. ``study_instance_uid`` puts the series in a given study
    (beside a CT phantom, say); ``first_file_number`` lets series share a folder.
    """
    uids = _series_uids(spec, study_instance_uid)
    # Measured first, in a pass of its own, so an ambiguous threshold fails before any file.
    truth = pet_truth(spec, threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = SeriesEncoder(_shared_dataset(spec, uids))
    paths: list[Path] = []
    for pet_slice in _slices(spec):
        number = first_file_number + pet_slice.image_index(spec.slices) - 1
        path = out_dir / pet_file_name(number)
        path.write_bytes(encoder.encode(*_own_elements(spec, uids, pet_slice)))
        paths.append(path)
    return PETPhantomSeries(
        paths=tuple(paths),
        study_instance_uid=uids.study,
        series_instance_uid=uids.series,
        frame_of_reference_uid=uids.frame_of_reference,
        truth=truth,
        bqml_per_suv=spec.bqml_per_suv,
        spec=spec,
    )
