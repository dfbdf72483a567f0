"""The source images as the writers hand them to highdicom.

Three things are done here, once, for SEG and SR alike:

- **Headers only.** highdicom reads the source images' metadata, never their pixels
  (its documentation says so), so a dataset with Pixel Data is copied without it: a
  512x512 series costs nothing to copy, and the caller's datasets are never modified.
  A dataset with nothing to drop or add (the pipeline's sources) is used as it is.
- **Type 2 attributes present.** De-identified data often lacks Patient Name, Patient ID,
  Birth Date, Sex, Study Date/Time, Referring Physician, Study ID or Accession Number.
  They are Type 2 in the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1):
  they must be present, possibly empty. highdicom reads them with attribute access and
  raises ``AttributeError`` when they are absent, so copies get empty values.
- **Aligned with the label map.** Index ``z`` of the label map is slice ``z`` of the
  volume. Without ``refs`` the sources are taken to be in that order already (one
  single-frame image per slice, or one multi-frame image whose frames are the slices);
  with ``refs`` (the ``Volume``'s ``SliceRef`` per z) they may come in any order.

``refs`` are taken by shape (:class:`SliceReference`, which the volume's ``SliceRef``
fits), so the writers depend on no pipeline type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from dicomnode.errors import ResultError

TYPE2_PATIENT_STUDY: Final = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_REQUIRED: Final = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_T = TypeVar("_T", bound=np.generic)
_PIXEL_TAGS: Final = frozenset(
    Tag(keyword) for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)


class SliceReference(Protocol):
    """Which image, and which frame of it, one z index of the label map came from."""

    @property
    def sop_class_uid(self) -> str: ...
    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def frame_number(self) -> int | None: ...  # 1-based; None for single-frame images


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A :class:`SliceReference` of our own."""

    sop_class_uid: str
    sop_instance_uid: str
    frame_number: int | None = None


@dataclass(frozen=True, slots=True)
class Sources:
    """Source headers ready for highdicom, and which image (and frame) each z index is."""

    images: tuple[Dataset, ...]  # single-frame: one per z, in z order; else one image
    slices: tuple[ImageRef, ...]  # one per z index of the label map
    frame_z: tuple[int, ...] | None  # multi-frame: the z index of each frame, frame order

    @property
    def study_instance_uid(self) -> str:
        return str(self.images[0].StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.images[0].SeriesInstanceUID)

    @property
    def modality(self) -> str:
        return str(self.images[0].get("Modality", ""))

    def image_at(self, z: int) -> Dataset:
        return self.images[0] if self.frame_z is not None else self.images[z]

    def frames_at(self, zs: Sequence[int]) -> list[int] | None:
        """Frame numbers of the slices ``zs`` (None for single-frame images)."""
        if self.frame_z is None:
            return None
        return sorted(int(self.slices[z].frame_number or 0) for z in zs)

    def in_frame_order(self, array: npt.NDArray[_T]) -> npt.NDArray[_T]:
        """``array`` (z first) reordered to the frames of a multi-frame source."""
        if self.frame_z is None or self.frame_z == tuple(range(len(self.frame_z))):
            return array
        return array[list(self.frame_z)]


def prepare_sources(
    datasets: Sequence[Dataset] | Sources,
    depth: int | None,
    refs: Sequence[SliceReference] | None = None,
) -> Sources:
    """Copy, complete and align ``datasets`` with a label map of ``depth`` slices.

    ``depth`` None means no label map: the images are only referenced (a report that
    found nothing), so no alignment is checked. Sources prepared before (the SEG's, for
    the SR of the same run) are checked against ``depth`` and ``refs`` and reused.
    """
    if isinstance(datasets, Sources):
        return _reused(datasets, depth, refs)
    if not datasets:
        raise ResultError("no source images were given")
    for ds in datasets:
        missing = [k for k in _REQUIRED if not ds.get(k)]
        if missing:
            raise ResultError(f"a source image lacks {', '.join(missing)}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if len({str(ds.get(keyword)) for ds in datasets}) > 1:
            raise ResultError(f"the source images are not one series: several {keyword}s")
    headers = [_header(ds) for ds in datasets]
    if any(_is_multiframe(ds) for ds in headers):
        return _multiframe(headers, depth, refs)
    return _single_frames(headers, depth, refs)


def _reused(src: Sources, depth: int | None, refs: Sequence[SliceReference] | None) -> Sources:
    if depth is not None and len(src.slices) != depth:
        raise ResultError(
            f"the label map has {depth} slices but the sources were prepared for {len(src.slices)}"
        )
    if refs is not None and [(r.sop_instance_uid, r.frame_number or 1) for r in refs] != [
        (s.sop_instance_uid, s.frame_number or 1) for s in src.slices
    ]:
        raise ResultError("the sources were prepared for other slice references")
    return src


def _header(ds: Dataset) -> Dataset:
    """``ds`` without pixel data and with the Type 2 patient/study attributes present.

    A dataset that already is that (the pipeline's sources: their pixel data is dropped
    once decoded) is used as it is; the writers and highdicom only read it. Copying 300
    headers element by element took a third of a second.
    """
    if not any(tag in ds for tag in _PIXEL_TAGS) and all(k in ds for k in TYPE2_PATIENT_STUDY):
        return ds
    header = Dataset()
    for elem in ds.elements():  # raw elements are copied as they are, unparsed
        tag: BaseTag = elem.tag
        if tag not in _PIXEL_TAGS:
            header[tag] = elem
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        header.file_meta = meta
    return header


def _is_multiframe(ds: Dataset) -> bool:
    return "NumberOfFrames" in ds and "PerFrameFunctionalGroupsSequence" in ds


def _single_frames(
    headers: list[Dataset], depth: int | None, refs: Sequence[SliceReference] | None
) -> Sources:
    if refs is not None:
        by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
        if len(by_uid) != len(headers):
            raise ResultError("two source images have the same SOP Instance UID")
        try:
            headers = [by_uid[ref.sop_instance_uid] for ref in refs]
        except KeyError as exc:
            raise ResultError(f"no source image has SOP Instance UID {exc.args[0]}") from exc
        if any(ref.frame_number not in (None, 1) for ref in refs):
            raise ResultError("a slice reference names a frame of a single-frame image")
    if depth is not None and len(headers) != depth:
        raise ResultError(
            f"the label map has {depth} slices but {len(headers)} source images were given"
        )
    slices = tuple(ImageRef(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in headers)
    return Sources(images=tuple(headers), slices=slices, frame_z=None)


def _multiframe(
    headers: list[Dataset], depth: int | None, refs: Sequence[SliceReference] | None
) -> Sources:
    if len(headers) != 1:
        raise ResultError(
            f"{len(headers)} source images were given, one of them multi-frame: "
            "a SEG can derive from several single-frame images or from one multi-frame image"
        )
    image = headers[0]
    frames = int(image.NumberOfFrames)
    uid = str(image.SOPInstanceUID)
    if refs is None:
        numbers = list(range(1, frames + 1))
    else:
        if any(ref.sop_instance_uid != uid for ref in refs):
            raise ResultError("a slice reference names an image that was not given")
        numbers = [int(ref.frame_number or 0) for ref in refs]
    # highdicom maps label-map slices to frames one to one (frame i <- slice i), so every
    # frame must be a slice exactly once.
    if sorted(numbers) != list(range(1, frames + 1)) or (
        depth is not None and depth != len(numbers)
    ):
        raise ResultError(
            f"the slices do not cover the {frames} frames of the multi-frame source once each"
        )
    slices = tuple(ImageRef(str(image.SOPClassUID), uid, n) for n in numbers)
    frame_z = tuple(int(z) for z in np.argsort(numbers))
    return Sources(images=(image,), slices=slices, frame_z=frame_z)
