"""The option columns of PS3.15 Table E.1-1 that dicom-anonymizer's tables do not carry.

dicom-anonymizer holds the Basic Profile column only; the two options dicomnode offers need
two more columns of the same table. Transcribed from the standard (via
innolitics/dicom-standard ``confidentiality_profile_attributes.json``, January 2025).
"""

from __future__ import annotations

from typing import Final

Tag = tuple[int, int]

# "Clean Desc. Opt." column: C for each of these. Text is kept and cleaned of the
# patient's identifiers; binary values (Maker Note, ...) cannot be cleaned and take the
# Basic Profile's action.
CLEAN_DESCRIPTORS: Final[frozenset[Tag]] = frozenset(
    (
        (0x0008, 0x1030),  # Study Description
        (0x0008, 0x103E),  # Series Description
        (0x0008, 0x1080),  # Admitting Diagnoses Description
        (0x0008, 0x1084),  # Admitting Diagnoses Code Sequence
        (0x0008, 0x1088),  # Pyramid Description
        (0x0008, 0x2111),  # Derivation Description
        (0x0008, 0x4000),  # Identifying Comments
        (0x0010, 0x2000),  # Medical Alerts
        (0x0010, 0x2110),  # Allergies
        (0x0010, 0x2180),  # Occupation
        (0x0010, 0x21B0),  # Additional Patient History
        (0x0010, 0x4000),  # Patient Comments
        (0x0012, 0x0051),  # Clinical Trial Time Point Description
        (0x0012, 0x0072),  # Clinical Trial Series Description
        (0x0016, 0x002B),  # Maker Note
        (0x0016, 0x004B),  # Device Setting Description
        (0x0018, 0x0010),  # Contrast/Bolus Agent
        (0x0018, 0x1030),  # Protocol Name
        (0x0018, 0x11BB),  # Acquisition Field Of View Label
        (0x0018, 0x1400),  # Acquisition Device Processing Description
        (0x0018, 0x4000),  # Acquisition Comments
        (0x0018, 0x9185),  # Respiratory Motion Compensation Technique Description
        (0x0018, 0x937B),  # Multi-energy Acquisition Description
        (0x0018, 0x937F),  # Decomposition Description
        (0x0018, 0x9424),  # Acquisition Protocol Description
        (0x0018, 0x9937),  # Requested Series Description
        (0x0018, 0xA003),  # Contribution Description
        (0x0020, 0x0027),  # Pyramid Label
        (0x0020, 0x4000),  # Image Comments
        (0x0020, 0x9158),  # Frame Comments
        (0x0032, 0x1030),  # Reason for Study
        (0x0032, 0x1060),  # Requested Procedure Description
        (0x0032, 0x1066),  # Reason for Visit
        (0x0032, 0x1067),  # Reason for Visit Code Sequence
        (0x0032, 0x1070),  # Requested Contrast Agent
        (0x0032, 0x4000),  # Study Comments
        (0x0038, 0x0040),  # Discharge Diagnosis Description
        (0x0038, 0x0062),  # Service Episode Description
        (0x0038, 0x0500),  # Patient State
        (0x0038, 0x4000),  # Visit Comments
        (0x003A, 0x0329),  # Waveform Filter Description
        (0x003A, 0x032B),  # Filter Lookup Table Description
        (0x0040, 0x0007),  # Scheduled Procedure Step Description
        (0x0040, 0x0254),  # Performed Procedure Step Description
        (0x0040, 0x0275),  # Request Attributes Sequence
        (0x0040, 0x0280),  # Comments on the Performed Procedure Step
        (0x0040, 0x0310),  # Comments on Radiation Dose
        (0x0040, 0x051A),  # Container Description
        (0x0040, 0x0600),  # Specimen Short Description
        (0x0040, 0x0602),  # Specimen Detailed Description
        (0x0040, 0x1002),  # Reason for the Requested Procedure
        (0x0040, 0x100A),  # Reason for Requested Procedure Code Sequence
        (0x0040, 0x1400),  # Requested Procedure Comments
        (0x0040, 0x2001),  # Reason for the Imaging Service Request
        (0x0040, 0x2400),  # Imaging Service Request Comments
        (0x0050, 0x0021),  # Long Device Description
        (0x006A, 0x0005),  # Annotation Group Label
        (0x006A, 0x0006),  # Annotation Group Description
        (0x0072, 0x0066),  # Selector LO Value
        (0x0072, 0x0068),  # Selector LT Value
        (0x0072, 0x006C),  # Selector SH Value
        (0x0072, 0x006E),  # Selector ST Value
        (0x0072, 0x0070),  # Selector UT Value
        (0x0400, 0x0565),  # Reason for the Attribute Modification
        (0x2200, 0x0002),  # Label Text
        (0x3002, 0x0121),  # Position Acquisition Template Name
        (0x3002, 0x0123),  # Position Acquisition Template Description
        (0x3006, 0x0002),  # Structure Set Label
        (0x3006, 0x0004),  # Structure Set Name
        (0x3006, 0x0006),  # Structure Set Description
        (0x3006, 0x0026),  # ROI Name
        (0x3006, 0x0028),  # ROI Description
        (0x3006, 0x0038),  # ROI Generation Description
        (0x3006, 0x0085),  # ROI Observation Label
        (0x3006, 0x0088),  # ROI Observation Description
        (0x300A, 0x0002),  # RT Plan Label
        (0x300A, 0x0003),  # RT Plan Name
        (0x300A, 0x0004),  # RT Plan Description
        (0x300A, 0x000B),  # Treatment Sites
        (0x300A, 0x000E),  # Prescription Description
        (0x300A, 0x0016),  # Dose Reference Description
        (0x300A, 0x0072),  # Fraction Group Description
        (0x300A, 0x00C3),  # Beam Description
        (0x300A, 0x00DD),  # Bolus Description
        (0x300A, 0x0196),  # Fixation Device Description
        (0x300A, 0x01A6),  # Shielding Device Description
        (0x300A, 0x01B2),  # Setup Technique Description
        (0x300A, 0x02EB),  # Compensator Description
        (0x300A, 0x0608),  # Treatment Position Group Label
        (0x300A, 0x0619),  # Radiation Dose Identification Label
        (0x300A, 0x0623),  # Radiation Dose In-Vivo Measurement Label
        (0x300A, 0x062A),  # RT Tolerance Set Label
        (0x300A, 0x0676),  # Equipment Frame of Reference Description
        (0x300A, 0x067C),  # Radiation Generation Mode Label
        (0x300A, 0x067D),  # Radiation Generation Mode Description
        (0x300A, 0x0734),  # Treatment Tolerance Violation Description
        (0x300A, 0x0742),  # Interlock Description
        (0x300A, 0x0783),  # Interlock Origin Description
        (0x300A, 0x078E),  # Patient Treatment Preparation Procedure Parameter Description
        (0x300A, 0x0792),  # Patient Treatment Preparation Method Description
        (0x300A, 0x0794),  # Patient Setup Photo Description
        (0x300A, 0x079A),  # Displacement Reference Label
        (0x300C, 0x0113),  # Reason for Omission Description
        (0x3010, 0x000F),  # Conceptual Volume Combination Description
        (0x3010, 0x0017),  # Conceptual Volume Description
        (0x3010, 0x0033),  # User Content Label
        (0x3010, 0x0034),  # User Content Long Label
        (0x3010, 0x0035),  # Entity Label
        (0x3010, 0x0036),  # Entity Name
        (0x3010, 0x0037),  # Entity Description
        (0x3010, 0x0038),  # Entity Long Label
        (0x3010, 0x0054),  # RT Prescription Label
        (0x3010, 0x0056),  # RT Treatment Approach Label
        (0x3010, 0x005A),  # RT Physician Intent Narrative
        (0x3010, 0x005C),  # Reason for Superseding
        (0x3010, 0x0061),  # Prior Treatment Dose Description
        (0x3010, 0x0077),  # Treatment Site
        (0x3010, 0x007A),  # Treatment Technique Notes
        (0x3010, 0x007B),  # Prescription Notes
        (0x3010, 0x007F),  # Fractionation Notes
        (0x3010, 0x0081),  # Prescription Notes Sequence
        (0x4008, 0x010B),  # Interpretation Text
        (0x4008, 0x0115),  # Interpretation Diagnosis Description
        (0x4008, 0x0300),  # Impressions
        (0x4008, 0x4000),  # Results Comments
    )
)

# "Rtn. Long. Full Dates Opt." column: K for every DA, DT and TM attribute of the table
# except these three, which identify rather than date the study.
NOT_LONGITUDINAL: Final[frozenset[Tag]] = frozenset(
    (
        (0x0010, 0x0030),  # Patient's Birth Date
        (0x0010, 0x0032),  # Patient's Birth Time
        (0x0016, 0x0077),  # GPS Time Stamp
    )
)

# ... and K for these three, whose VR is not DA, DT or TM.
LONGITUDINAL_OTHER_VR: Final[frozenset[Tag]] = frozenset(
    (
        (0x0008, 0x0201),  # Timezone Offset From UTC
        (0x0034, 0x0007),  # Frame Origin Timestamp
        (0x0400, 0x0310),  # Certified Timestamp
    )
)
