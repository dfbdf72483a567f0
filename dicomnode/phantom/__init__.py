"""Synthetic, valid DICOM data whose answer is known, for the demo, tests and benchmarks.

Only pydicom and numpy are used here, so the phantom never depends on the node it tests.
"""

from dicomnode.phantom.ct import (
    CTPhantomSeries,
    CTPhantomSpec,
    ct_file_name,
    ct_phantom_datasets,
    ct_phantom_truth,
    write_ct_phantom,
)
from dicomnode.phantom.small import write_small_instances
from dicomnode.phantom.truth import (
    BONE_HU,
    FAT_HU,
    SOFT_TISSUE_HU,
    HURange,
    TissueHU,
    TissueVolumes,
)

__all__ = [
    "BONE_HU",
    "FAT_HU",
    "SOFT_TISSUE_HU",
    "CTPhantomSeries",
    "CTPhantomSpec",
    "HURange",
    "TissueHU",
    "TissueVolumes",
    "ct_file_name",
    "ct_phantom_datasets",
    "ct_phantom_truth",
    "write_ct_phantom",
    "write_small_instances",
]
