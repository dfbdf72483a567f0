"""A completed series, as files, into one :class:`Volume` in modality units, or a refusal.

Two passes. The first parses every file's header once, its pixel data deferred (read
later from the file at its recorded offset), skips non-images, and places and checks
every frame (:mod:`.frames`, :mod:`.stacking`): a series that cannot form a volume is
refused before any pixel is decoded. The second decodes frame by frame straight into one
preallocated float32 array, rescaled in place: a 300-slice 512x512 CT holds its 300 MB
result and a few slices of temporaries, never the series twice. Uncompressed little-endian
single-frame images (most series) are read from the file at their pixel data's offset, a
few at a time in threads; the rest go through pydicom's handlers (pylibjpeg for the
compressed syntaxes).

Before anything is placed or allocated, the size the headers claim (rows x columns x
frames, summed over the instances, as float32) is checked against the configured
:class:`~dicomnode.config.PipelineLimits`: a header is data from the network, and
Rows = Columns = 65535 must fail the job, not allocate tens of gigabytes.

The parsed headers, pixel data dropped once decoded, are kept as the *sources*: the SEG
and SR writers need the source datasets to reference and align with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomnode.config import PipelineLimits
from dicomnode.errors import VolumeError
from dicomnode.logs import get_logger
from dicomnode.pipeline.frames import Frame, frames_of, functional_group_item, number_of_frames
from dicomnode.pipeline.stacking import Tolerances, stack
from dicomnode.volume import FloatArray, SliceRef, Volume

log = get_logger(__name__)

# Pixel data elements (PS3.3 C.7.6.3, C.7.6.24); large elements beyond them are deferred.
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DEFER_BYTES = 64 * 1024
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Stored as is, little endian, so read straight from the file (PS3.5 A.1, A.2).
_PLAIN_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_DECODE_THREADS = 4  # file reads and numpy release the GIL; more buys nothing on 2-8 cores
_VOXEL_BYTES = np.dtype(np.float32).itemsize  # the volume is float32 whatever the source
_DEFAULT_LIMITS = PipelineLimits()

# Errors pydicom and its pixel plugins raise on data they cannot decode.
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    AttributeError,
    EOFError,
    OSError,  # a file changed or gone between the passes
)

_GENERAL_KEYWORDS = ("BodyPartExamined", "SeriesDescription", "SeriesNumber", "Manufacturer")
_PET_KEYWORDS = ("Units", "DecayCorrection", "CorrectedImage", "PatientWeight", "PatientSize")
_PET_SERIES_KEYWORDS = ("SeriesDate", "SeriesTime")
_RADIOPHARMACEUTICAL_KEYWORDS = (
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
)


@dataclass(frozen=True, slots=True)
class LoadedSeries:
    """A volume and the headers of the instances it came from.

    ``sources`` are the image instances read without pixel data, each once, in the order
    their first frame appears along z. For a series of single-frame images that is one
    dataset per z index, ``sources[z]`` matching ``volume.refs[z]`` (what highdicom's
    Segmentation expects of single-frame sources); a multi-frame source appears once and
    ``volume.refs[z].frame_number`` says which of its frames each z index is.
    """

    volume: Volume
    sources: tuple[Dataset, ...]


def load_volume(
    paths: Sequence[Path],
    *,
    spacing_tolerance: float = 0.01,
    lateral_tolerance: float = 0.1,
    limits: PipelineLimits = _DEFAULT_LIMITS,
) -> Volume:
    """The series in ``paths`` (any order) as one volume; see :func:`load_series`."""
    return load_series(
        paths,
        spacing_tolerance=spacing_tolerance,
        lateral_tolerance=lateral_tolerance,
        limits=limits,
    ).volume


def load_series(
    paths: Sequence[Path],
    *,
    spacing_tolerance: float = 0.01,
    lateral_tolerance: float = 0.1,
    limits: PipelineLimits = _DEFAULT_LIMITS,
    irregular: bool = False,
    inspect: Callable[[Sequence[Dataset]], None] | None = None,
) -> LoadedSeries:
    """Read, check, sort along the slice normal, decode and rescale a series.

    ``spacing_tolerance`` is relative: each gap between neighbouring slices may differ
    that much from the median gap. ``lateral_tolerance`` is in pixels: how far a slice may
    lie off the normal through the first before the series counts as tilted. Files
    without pixel data (a KOS, an SR, a DICOMDIR) are skipped; an instance present twice
    (the same SOP Instance UID, e.g. received twice) is read once, from its first path.
    Anything that would give a wrong volume raises :class:`VolumeError` naming what is
    wrong, before any pixel is decoded where the headers show it; so does a volume larger
    than ``limits``, before anything is allocated for it. ``irregular`` accepts slices at
    uneven spacing (the geometry then lists each slice's offset). ``inspect`` is called
    with the image instances' headers before any frame is placed or decoded: what it
    raises refuses the series at the cost of reading its headers (an input envelope).
    """
    tolerances = Tolerances(spacing=spacing_tolerance, lateral=lateral_tolerance)
    files, headers = _image_headers(paths)
    _require_one_series(headers, files)
    _require_within(headers, limits)
    if inspect is not None:
        inspect(headers)
    names = [path.name for path in files]
    frames = [frame for i, ds in enumerate(headers) for frame in frames_of(ds, i, names[i])]
    grid = stack(frames, names, tolerances, irregular=irregular)
    if not grid.geometry.regular:
        log.info("irregular_stack", median_spacing_mm=round(grid.geometry.spacing[0], 3))
    if grid.geometry.sheared:
        log.info("sheared_stack", tilt_degrees=round(grid.geometry.tilt_degrees, 2))
    ordered = [frames[i] for i in grid.order]
    array = _decode(files, headers, ordered)

    first_source: dict[int, int] = {}  # source index -> order of its first frame along z
    for frame in ordered:
        first_source.setdefault(frame.source, len(first_source))
    sources = tuple(headers[i] for i in first_source)
    first = headers[ordered[0].source]
    modality = str(first.get("Modality", ""))
    volume = Volume(
        array=array,
        geometry=grid.geometry,
        refs=tuple(SliceRef(f.sop_class_uid, f.sop_instance_uid, f.frame_number) for f in ordered),
        modality=modality,
        units=_units(first, modality),
        frame_of_reference_uid=str(first.FrameOfReferenceUID)
        if "FrameOfReferenceUID" in first
        else None,
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        metadata=_metadata(first, sources, ordered[0], modality),
    )
    return LoadedSeries(volume=volume, sources=sources)


def _image_headers(paths: Sequence[Path]) -> tuple[list[Path], list[Dataset]]:
    """The image instances' headers, each instance once, with their files."""
    files: list[Path] = []
    headers: list[Dataset] = []
    seen: set[str] = set()
    for path in paths:
        ds = _read_header(path)
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            if "Rows" in ds:
                raise VolumeError(f"{path.name} has image attributes but no pixel data")
            sop_class_uid = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
            log.info("non_image_skipped", file=path.name, sop_class_uid=str(sop_class_uid))
            continue
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            continue  # the same instance twice: its second copy adds nothing
        seen.add(uid)
        files.append(path)
        headers.append(ds)
    if not headers:
        raise VolumeError(f"none of the {len(paths)} files is an image: no volume to form")
    return files, headers


def _read_header(path: Path) -> Dataset:
    """The whole dataset, its pixel data deferred: parsed once, read when decoded."""
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            # A deferred value is read again at its offset in the file, which in a
            # deflated file is not the offset in the inflated dataset: read it all now.
            ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise VolumeError(f"cannot read {path.name} as DICOM: {exc}") from exc
    if len(ds) == 0:
        # pydicom gives an empty dataset for some truncated files rather than raising.
        raise VolumeError(f"cannot read {path.name}: its dataset is empty (truncated?)")
    return ds


def _require_one_series(headers: Sequence[Dataset], files: Sequence[Path]) -> None:
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID", "Modality"):
        values = {str(ds.get(keyword, "")) for ds in headers}
        if len(values) > 1:
            counts = {v: sum(str(ds.get(keyword, "")) == v for ds in headers) for v in values}
            shown = ", ".join(f"{v or '(none)'} ({n})" for v, n in sorted(counts.items()))
            raise VolumeError(
                f"the {len(files)} images do not share one {keyword}: {shown}; "
                "one volume needs one series in one frame of reference"
            )


def _require_within(headers: Sequence[Dataset], limits: PipelineLimits) -> None:
    """Refuse a volume larger than the limits, from the headers alone (nothing allocated).

    Rows and Columns are US (PS3.3 C.7.6.3), so one frame may claim 65535 x 65535; Number
    of Frames is IS and may claim billions. Their product, summed over the instances, is
    the most voxels the volume could have.
    """
    voxels = 0
    largest = (0, 0)
    for ds in headers:
        rows, columns = _dimension(ds, "Rows"), _dimension(ds, "Columns")
        try:
            frames = max(1, number_of_frames(ds))
        except (TypeError, ValueError):
            frames = 1  # frames_of says what is wrong with it
        voxels += rows * columns * frames
        largest = max(largest, (rows, columns))
    size = voxels * _VOXEL_BYTES
    if voxels > limits.max_voxels or size > limits.max_bytes:
        raise VolumeError(
            f"the volume would be too large: {len(headers)} instance(s) of up to "
            f"{largest[0]} x {largest[1]} pixels make {voxels:,} voxels ({_gib(size)} as "
            f"float32); pipeline_limits allow {limits.max_voxels:,} voxels and "
            f"{_gib(limits.max_bytes)}"
        )


def _dimension(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    return value if isinstance(value, int) and value > 0 else 0


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _decode(
    files: Sequence[Path], headers: Sequence[Dataset], ordered: Sequence[Frame]
) -> FloatArray:
    """Every frame decoded into its z index of one float32 array, rescaled in place.

    Single-frame images stored uncompressed, little endian (what scanners and most
    PACS send, and what the node's spool holds as received) are read straight from the
    file at their pixel data's offset, in a few threads (the read and the rescale run
    outside the GIL); everything else goes through pydicom's decoders one by one.
    """
    rows, columns = ordered[0].rows, ordered[0].columns
    array: FloatArray = np.empty((len(ordered), rows, columns), dtype=np.float32)
    wanted: dict[int, dict[int, int]] = {}  # source -> frame index (0-based) -> z
    for z, frame in enumerate(ordered):
        wanted.setdefault(frame.source, {})[(frame.frame_number or 1) - 1] = z
    plain = {
        source: layout
        for source, targets in wanted.items()
        if list(targets) == [0]
        and (layout := _plain_layout(headers[source], rows, columns)) is not None
    }

    def read_plain(source: int) -> None:
        try:
            pixels = _read_plain(files[source], plain[source], rows, columns)
        except (OSError, ValueError) as exc:  # a file changed or gone between the passes
            syntax = _syntax_name(headers[source].file_meta.get("TransferSyntaxUID", ""))
            raise VolumeError(
                f"cannot decode the pixel data of {files[source].name} ({syntax}): {exc}"
            ) from exc
        z = wanted[source][0]
        _rescale_into(array[z], pixels, ordered[z])

    with ThreadPoolExecutor(_DECODE_THREADS, thread_name_prefix="decode") as pool:
        list(pool.map(read_plain, plain))
    for source, targets in wanted.items():
        ds = headers[source]
        if source in plain:
            _drop_pixels(ds)
            continue
        indices = sorted(targets)
        try:
            for index, pixels in zip(indices, iter_pixels(ds, indices=indices), strict=True):
                z = targets[index]
                if pixels.shape != (rows, columns):
                    raise VolumeError(
                        f"{files[source].name}: decoded pixels are {pixels.shape}, "
                        f"its header says {rows}x{columns}"
                    )
                _rescale_into(array[z], pixels, ordered[z])
        except _DECODE_ERRORS as exc:
            syntax = _syntax_name(ds.file_meta.get("TransferSyntaxUID", ""))
            raise VolumeError(
                f"cannot decode the pixel data of {files[source].name} ({syntax}): {exc}"
            ) from exc
        _drop_pixels(ds)
    return array


def _drop_pixels(ds: Dataset) -> None:
    """The sources are headers: drop the pixel data (read for decoding, or deferred)."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]


@dataclass(frozen=True, slots=True)
class _PlainLayout:
    """Where one uncompressed frame lies in its file, and how its values are stored."""

    offset: int | None  # in the file; None when the value was read with the header
    value: bytes | None
    dtype: np.dtype[Any]
    unused_bits: int  # Bits Allocated - Bits Stored


def _plain_layout(ds: Dataset, rows: int, columns: int) -> _PlainLayout | None:
    """The layout of a single native little-endian frame, or None for pydicom to decode."""
    if ds.file_meta.get("TransferSyntaxUID") not in _PLAIN_SYNTAXES or number_of_frames(ds) != 1:
        return None
    allocated = ds.get("BitsAllocated")
    stored = ds.get("BitsStored")
    representation = ds.get("PixelRepresentation")
    if (
        allocated not in (8, 16, 32)
        or not isinstance(stored, int)
        or not 0 < stored <= allocated
        or representation not in (0, 1)
        or ds.get("SamplesPerPixel", 1) != 1
    ):
        return None
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    dtype = np.dtype(f"<{'i' if representation else 'u'}{allocated // 8}")
    if (
        not isinstance(element, RawDataElement)
        or element.length == _UNDEFINED_LENGTH
        or element.length < rows * columns * dtype.itemsize
    ):
        return None  # converted already, encapsulated, or short: pydicom says what is wrong
    if element.value is None:
        return _PlainLayout(element.value_tell, None, dtype, allocated - stored)
    if len(element.value) < rows * columns * dtype.itemsize:
        return None  # the file ends inside the value: pydicom says so
    return _PlainLayout(None, bytes(element.value), dtype, allocated - stored)


def _read_plain(path: Path, layout: _PlainLayout, rows: int, columns: int) -> npt.NDArray[Any]:
    """The stored values, as pydicom's native decoder gives them (unused bits cleared)."""
    count = rows * columns
    if layout.value is not None:
        pixels = np.frombuffer(layout.value, layout.dtype, count).copy()
    else:
        pixels = np.fromfile(path, layout.dtype, count, offset=layout.offset or 0)
        if pixels.size != count:
            raise ValueError("the file ends inside its pixel data")
    if layout.unused_bits:
        # The bits above Bits Stored are not part of the value: shifting them out and
        # back clears them (unsigned) or extends the sign (signed), as pydicom does.
        np.left_shift(pixels, layout.unused_bits, out=pixels)
        np.right_shift(pixels, layout.unused_bits, out=pixels)
    return pixels.reshape(rows, columns)


def _rescale_into(slab: FloatArray, pixels: npt.NDArray[Any], frame: Frame) -> None:
    """``slab = pixels * slope + intercept`` in float32, without a temporary."""
    if frame.slope != 1.0:
        np.multiply(pixels, np.float32(frame.slope), out=slab)
        if frame.intercept != 0.0:
            slab += np.float32(frame.intercept)
    elif frame.intercept != 0.0:
        np.add(pixels, np.float32(frame.intercept), out=slab)
    else:
        slab[...] = pixels


def _syntax_name(syntax: str) -> str:
    return UID(syntax).name if syntax else "no transfer syntax"


def _units(first: Dataset, modality: str) -> str:
    if modality == "CT":
        return "HU"  # PS3.3 C.8.2.1 CT Image: values after rescale are Hounsfield units
    if modality == "PT" and first.get("Units"):
        return str(first.Units)  # PS3.3 C.8.9.1 PET Series: BQML, CNTS, GML ...
    return "1"


def _metadata(
    first: Dataset, sources: Sequence[Dataset], first_frame: Frame, modality: str
) -> dict[str, Any]:
    """The header values later steps need, JSON-friendly; an absent value has no key.

    Taken from the first slice along z, except the PET acquisition date and time, which
    are the earliest of the series (the QIBA SUV calculation's scan start when the
    series time is not trustworthy).
    """
    meta: dict[str, Any] = {"Rows": first_frame.rows, "Columns": first_frame.columns}
    _copy(first, _GENERAL_KEYWORDS, meta)
    if first_frame.slice_thickness is not None:
        meta["SliceThickness"] = first_frame.slice_thickness
    if modality == "CT":
        voi = first
        if first_frame.frame_number is not None:
            per_frame = first.get("PerFrameFunctionalGroupsSequence")
            group = per_frame[first_frame.frame_number - 1] if per_frame else None
            voi = functional_group_item(first, group, "FrameVOILUTSequence") or first
        for keyword in ("WindowCenter", "WindowWidth"):
            value = _json(voi.get(keyword))
            if value is not None:
                # The first preset where several are given: the one viewers show first.
                meta[keyword] = value[0] if isinstance(value, list) else value
    if modality == "PT":
        _copy(first, _PET_KEYWORDS + _PET_SERIES_KEYWORDS, meta)
        earliest = _earliest_acquisition(sources)
        if earliest is not None:
            meta["AcquisitionDate"], meta["AcquisitionTime"] = earliest
        drugs = first.get("RadiopharmaceuticalInformationSequence")
        if drugs:
            _copy(drugs[0], _RADIOPHARMACEUTICAL_KEYWORDS, meta)
    return meta


def _copy(ds: Dataset, keywords: Sequence[str], into: dict[str, Any]) -> None:
    for keyword in keywords:
        value = _json(ds.get(keyword))
        if value is not None:
            into[keyword] = value


def _json(value: Any) -> Any:
    """A DICOM value as str, int, float or a list of them; None for absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        items = [_json(v) for v in value]
        return [v for v in items if v is not None] or None
    if isinstance(value, int):  # IS is an int subclass
        return int(value)
    if isinstance(value, float):  # DSfloat is a float subclass
        return float(value)
    return str(value)


def _earliest_acquisition(sources: Sequence[Dataset]) -> tuple[str, str] | None:
    """The earliest (AcquisitionDate, AcquisitionTime) pair across the instances."""
    stamps: list[tuple[str, float, str]] = []
    for ds in sources:
        time = str(ds.get("AcquisitionTime", "") or "")
        seconds = _tm_seconds(time)
        if seconds is not None:
            stamps.append((str(ds.get("AcquisitionDate", "") or ""), seconds, time))
    if not stamps:
        return None
    date, _seconds, time = min(stamps)
    return date, time


def _tm_seconds(value: str) -> float | None:
    """A TM value (HH, HHMM, HHMMSS, HHMMSS.FFFFFF; old colon forms too) in seconds."""
    digits = value.strip().replace(":", "")
    whole, _, fraction = digits.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hours, minutes, seconds = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hours * 3600 + minutes * 60 + seconds + float(f"0.{fraction or 0}")
