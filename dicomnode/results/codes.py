"""Coded concepts: the ``Code`` value type and the vocabulary the result writers use.

A pipeline names what it found and what it measured with codes, never free text, so that
viewers and downstream systems can act on them. The constants below are the codes the
reference pipelines need; each names the DICOM context group (PS3.16) it is drawn from.
Values were checked against pydicom's copy of the PS3.16 code tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# PS3.5 6.2: Code Value is SH (16 characters; longer ones go to Long Code Value, UC),
# Coding Scheme Designator SH, Code Meaning LO (64). No backslash in any of them.
_SH_MAX: Final = 16
_LO_MAX: Final = 64
_LONG_CODE_MAX: Final = 1024
_PRINTABLE: Final = re.compile(r"[\x20-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept: ``Code("55603005", "SCT", "Fat")``."""

    value: str
    scheme: str
    meaning: str

    def __post_init__(self) -> None:
        checks = (
            ("value", self.value, _LONG_CODE_MAX),
            ("scheme", self.scheme, _SH_MAX),
            ("meaning", self.meaning, _LO_MAX),
        )
        for name, text, limit in checks:
            if not _PRINTABLE.fullmatch(text) or len(text) > limit or text != text.strip():
                raise ValueError(
                    f"code {name} must be 1 to {limit} printable ASCII characters without "
                    f"'\\' or surrounding spaces, got {text!r}"
                )

    def __str__(self) -> str:
        return f"({self.value}, {self.scheme}, {self.meaning!r})"


# --- Segmented property categories (CID 7150) -------------------------------------------
TISSUE: Final = Code("85756007", "SCT", "Tissue")
ANATOMICAL_STRUCTURE: Final = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Final = Code(
    "49755003", "SCT", "Morphologically Abnormal Structure"
)

# --- Segmented property types (CID 7151, 7154 ...) --------------------------------------
FAT: Final = Code("55603005", "SCT", "Fat")  # "Adipose tissue" in CID 7151
SOFT_TISSUE: Final = Code("87784001", "SCT", "Soft tissue")
BONE: Final = Code("272673000", "SCT", "Bone")
LESION: Final = Code("52988006", "SCT", "Lesion")

# --- Algorithm families (CID 7162) ------------------------------------------------------
ARTIFICIAL_INTELLIGENCE: Final = Code("123110", "DCM", "Artificial Intelligence")

# --- Measurement concepts (CID 7469 generic intensity and size, CID 7466 PET) ---------
VOLUME: Final = Code("118565006", "SCT", "Volume")
ATTENUATION_COEFFICIENT: Final = Code("112031", "DCM", "Attenuation Coefficient")
SUVBW: Final = Code("126401", "DCM", "SUVbw")
METABOLIC_VOLUME: Final = Code("126032", "DCM", "Metabolic Volume")
TOTAL_LESION_GLYCOLYSIS: Final = Code("126033", "DCM", "Total Lesion Glycolysis")
PROBABILITY: Final = Code("122157", "DCM", "Probability")

# --- Derivations (CID 7464 region of interest measurement modifiers) -------------------
MEAN: Final = Code("373098007", "SCT", "Mean")
MAXIMUM: Final = Code("56851009", "SCT", "Maximum")

# --- Units (UCUM; CID 7181, CID 85) ---------------------------------------------------
MILLILITER: Final = Code("ml", "UCUM", "milliliter")  # UCUM has both "l" and "L"
HOUNSFIELD_UNIT: Final = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
# CID 85 as PS3.16 now spells it; older editions wrote "{SUVbw}g/ml".
SUVBW_UNIT: Final = Code("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight")
# TLG = SUVmean [g/ml] x MTV [ml], so grams; PS3.16 names no unit for it.
GRAM: Final = Code("g", "UCUM", "gram")
NO_UNITS: Final = Code("1", "UCUM", "no units")

# --- Qualitative values (CID 240 / 241 present-absent) ----------------------------------
PRESENT: Final = Code("52101004", "SCT", "Present")
ABSENT: Final = Code("272519000", "SCT", "Absent")
FINDING: Final = Code("121071", "DCM", "Finding")

# --- Geometry of a region (CID 219) -----------------------------------------------------
BOUNDED_BY: Final = Code("75958009", "SCT", "Bounded by")

# --- Procedures reported (CID 100) -------------------------------------------------------
CT_PROCEDURE: Final = Code("25045-6", "LN", "CT unspecified body region")
MR_PROCEDURE: Final = Code("25056-3", "LN", "MRI unspecified body region")
PET_PROCEDURE: Final = Code("44136-0", "LN", "PET unspecified body region")
IMAGING_PROCEDURE: Final = Code("363679005", "SCT", "Imaging procedure")
