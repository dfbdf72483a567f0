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
from dicomnode.phantom.pet import (
    DEFAULT_LESIONS,
    F18_HALF_LIFE_S,
    PETPhantomSeries,
    PETPhantomSpec,
    pet_file_name,
    pet_phantom_datasets,
    pet_truth,
    write_pet_phantom,
)
from dicomnode.phantom.pet_uptake import (
    DEFAULT_SUV_THRESHOLD,
    Lesion,
    PETTruth,
    bqml_per_suv,
    decay_factor,
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
    "DEFAULT_LESIONS",
    "DEFAULT_SUV_THRESHOLD",
    "F18_HALF_LIFE_S",
    "FAT_HU",
    "SOFT_TISSUE_HU",
    "CTPhantomSeries",
    "CTPhantomSpec",
    "HURange",
    "Lesion",
    "PETPhantomSeries",
    "PETPhantomSpec",
    "PETTruth",
    "TissueHU",
    "TissueVolumes",
    "bqml_per_suv",
    "ct_file_name",
    "ct_phantom_datasets",
    "ct_phantom_truth",
    "decay_factor",
    "pet_file_name",
    "pet_phantom_datasets",
    "pet_truth",
    "write_ct_phantom",
    "write_pet_phantom",
    "write_small_instances",
]
