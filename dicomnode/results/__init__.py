"""Result writers: what a pipeline found, as DICOM SEG and a TID 1500 SR for the PACS.

The only home of highdicom. A pipeline describes its output with the plain values of
:mod:`~dicomnode.results.content` (codes from :mod:`~dicomnode.results.codes`), then::

    seg = write_seg(sources, labels, segments, algorithm, series_number=n)   # or None
    sr = write_sr(sources, seg, labels, segments, algorithm, series_number=n + 1,
                  measurements=..., findings=...)
    paths = [save(obj, outbox_folder) for obj in (seg, sr) if obj is not None]

Both objects are new series in the sources' study. Why the SR has the shape it has (OHIF
3) is told in :mod:`~dicomnode.results.sr`; :mod:`~dicomnode.results.ohif` checks it.
"""

from dicomnode.results.codes import Code
from dicomnode.results.content import (
    AlgorithmInfo,
    Finding,
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
)
from dicomnode.results.files import save
from dicomnode.results.seg import write_seg
from dicomnode.results.sr import write_sr

__all__ = [
    "AlgorithmInfo",
    "Code",
    "Finding",
    "Measurement",
    "SegmentMeasurements",
    "SegmentSpec",
    "save",
    "write_seg",
    "write_sr",
]
