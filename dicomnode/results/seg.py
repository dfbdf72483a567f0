"""DICOM SEG from a label map: BINARY, pixel-aligned with the source frames (PS3.3 A.51).

One segment per label that is present, numbered 1..n in order of label; a label with no
pixel gets no segment, and a map with no label at all gets no SEG (``None``): the SR says
that nothing was found. Frames without a pixel of their segment are left out
(``omit_empty_frames``), and highdicom gives every frame its Derivation Image and Source
Image references and its plane position from the source image it lies on.

Each segment gets a Tracking UID and ID (its name); the SR reuses them, so a viewer can
tie an SR measurement group to its segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from dicomnode.errors import ResultError
from dicomnode.results import identity, tables
from dicomnode.results.coding import coded
from dicomnode.results.content import AlgorithmInfo, SegmentSpec
from dicomnode.results.labelmap import LabelArray, LabelMap, SegmentPixels
from dicomnode.results.provenance import Provenance
from dicomnode.results.sources import SliceReference, Sources, prepare_sources


def write_seg(
    sources: Sequence[Dataset] | Sources,
    labels: LabelArray | LabelMap,
    segments: Sequence[SegmentSpec],
    algorithm: AlgorithmInfo,
    *,
    series_number: int,
    refs: Sequence[SliceReference] | None = None,
    provenance: Provenance | None = None,
) -> Dataset | None:
    """A Segmentation of ``labels`` (z, y, x) over ``sources``, or None if none is present.

    ``sources`` may be read with or without pixel data; they are not modified. Without
    ``refs`` they must be in the label map's z order (or be one multi-frame image whose
    frames are); with ``refs`` (``Volume.refs``) any order will do. ``labels`` and
    ``sources`` may come checked and prepared already (``LabelMap.of``,
    ``prepare_sources``), to be shared with the SR. ``provenance`` names the model file,
    pipeline, rules and node (:mod:`~dicomnode.results.provenance`).
    """
    tables.prepare()
    label_map = LabelMap.of(labels, segments)
    if not label_map.present:
        return None
    src = prepare_sources(sources, label_map.depth, refs)
    rows, columns = (int(n) for n in label_map.array.shape[1:])
    image = src.images[0]
    if (int(image.Rows), int(image.Columns)) != (rows, columns):
        raise ResultError(
            f"the label map's slices are {rows}x{columns} but the source images are "
            f"{image.Rows}x{image.Columns}: map the mask back to the source grid first"
        )
    if not image.get("FrameOfReferenceUID"):
        raise ResultError("the source images have no Frame of Reference UID")
    pixels = src.in_frame_order(label_map.segment_numbers())
    family = coded(algorithm.family)
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=family,
        version=algorithm.version,
        source=algorithm.source,
        parameters=None if provenance is None else provenance.parameters(),
    )
    try:
        return hd.seg.Segmentation(
            source_images=src.images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_describe(p, algorithm_id) for p in label_map.present],
            series_instance_uid=identity.new_uid(),
            series_number=series_number,
            sop_instance_uid=identity.new_uid(),
            instance_number=1,
            manufacturer=identity.MANUFACTURER,
            manufacturer_model_name=identity.MODEL_NAME,
            software_versions=identity.SOFTWARE_VERSION,
            device_serial_number=identity.DEVICE_SERIAL_NUMBER,
            content_description=identity.truncated(f"{algorithm.name} {algorithm.version}"),
            content_label=identity.content_label(algorithm),
            omit_empty_frames=True,
            series_description=identity.truncated(f"{algorithm.name} SEG"),
            contributing_equipment=None if provenance is None else [provenance.equipment()],
        )
    except (ValueError, AttributeError, KeyError) as exc:  # highdicom's refusals
        raise ResultError(f"the SEG could not be built: {exc}") from exc


def _describe(
    segment: SegmentPixels, algorithm_id: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    spec = segment.spec
    description = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=spec.name,
        segmented_property_category=coded(spec.category),
        segmented_property_type=coded(spec.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_id,
        tracking_uid=identity.new_uid(),
        tracking_id=spec.name,
        display_color=None if spec.color is None else hd.color.CIELabColor.from_rgb(*spec.color),
    )
    if spec.description is not None:
        description.SegmentDescription = spec.description
    return description
