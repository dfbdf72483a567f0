"""What made a result: the model file, the pipeline definition, the rules and the node.

Every SEG and SR names them twice, in standard places:

- the algorithm identification (SEG Segment Algorithm, SR TID 4019 on every group and
  measurement) carries them as Algorithm Parameters (``model_sha256=...`` and so on),
  beside the algorithm's configured name and version;
- the Contributing Equipment Sequence (0018,A001) gets a dicomnode item with Purpose of
  Reference (DCM, 109102, "Processing Equipment"): the equipment that processed
  composite instances to create new ones (109103 "Modifying Equipment" is for changing
  instances in place). Its Software Versions is the node's version; its Contribution
  Description spells all four out.

The model hash is the SHA-256 of the model's file (for a folder: of its files' names and
contents, in order); the pipeline's is the SHA-256 of its normalised definition; the rules
version is the one the series was routed under.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.sr.codedict import codes as dicom_codes

from dicomnode import __version__
from dicomnode.results import identity


@dataclass(frozen=True, slots=True)
class Provenance:
    """The versions of everything that went into one result."""

    model_sha256: str
    pipeline_sha256: str
    rules_version: str | None = None  # None: not made by a routed job (a direct call)
    node_version: str = __version__
    # Why the series lay outside the model's input envelope, for a run that was flagged
    # (dicomnode.pipeline.envelope); None when it lay inside or none was declared.
    input_envelope: str | None = None

    def parameters(self) -> dict[str, str]:
        """Algorithm Parameters, ``name: value``."""
        values = {
            "model_sha256": self.model_sha256,
            "pipeline_sha256": self.pipeline_sha256,
            "rules_version": self.rules_version or "none",
            "dicomnode_version": self.node_version,
        }
        if self.input_envelope is not None:
            # Bounded: the Contributing Equipment's description (ST) holds 1024 characters.
            values["input_envelope"] = "outside: " + _bounded(self.input_envelope, 600)
        return values

    def sr_parameters(self) -> list[str]:
        """TID 4019 Algorithm Parameters: one ``name=value`` TEXT item each."""
        return [f"{name}={value}" for name, value in self.parameters().items()]

    def equipment(self) -> hd.ContributingEquipment:
        """The Contributing Equipment item that names dicomnode and what it ran."""
        return hd.ContributingEquipment(
            manufacturer=identity.MANUFACTURER,
            purpose_of_reference=dicom_codes.DCM.ProcessingEquipment,
            manufacturer_model_name=identity.MODEL_NAME,
            software_versions=self.node_version,
            device_serial_number=identity.DEVICE_SERIAL_NUMBER,
            contribution_description="; ".join(
                f"{name} {value}" for name, value in self.parameters().items()
            ),
        )


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
