"""The one exception tree of dicomnode.

::

    DicomNodeError
     +-- ConfigError          invalid configuration; names the file and the key
     +-- StorageError         the spool or the index could not persist something
     |    +-- SpoolFullError  no space left (answered as 0xA700)
     |    +-- DatasetTooLargeError  a dataset, or its inflated form, passes a size limit (0xA700)
     |    +-- StorageInUseError  another process (a running node) holds the storage lock
     +-- InstanceError        a received dataset cannot be accepted as it is
     |    +-- UIDMismatchError      dataset UIDs differ from the command's (0xA900)
     |    +-- UnreadableDatasetError cannot parse or lacks identifying keys (0xC000 range)
     +-- PeerError            a remote DICOM node could not be reached or refused us
     |    +-- PeerUnreachableError      connection refused or timed out (temporary)
     |    +-- AssociationRejectedError  A-ASSOCIATE-RJ; ``permanent`` per its result
     |    +-- AssociationAbortedError   the peer or the network ended it (temporary)
     |    +-- PeerTLSError              DICOM-TLS failed; ``permanent`` unless the link dropped
 |    +-- PeerHTTPError             a DICOMweb service refused a request; ``permanent`` per status
     +-- AddressError         an ``AE@HOST:PORT`` string or destination name is invalid
     +-- RoutingError         a completed series version cannot be routed (a file unreadable)
     +-- ExportError          a volume cannot be written in the asked format (NIfTI, PNG ...)
     +-- PipelineError        a pipeline job cannot complete; the job keeps the message
          +-- VolumeError     the series cannot form one correct volume
          +-- StepError       a preprocessing step cannot apply (e.g. a missing PET attribute)
          +-- OutsideEnvelopeError  the series lies outside the model's input envelope (skip)
          +-- RunnerError     a model failed to load or to run
          |    +-- ModelTimeoutError  the model exceeded its time limit
          +-- ResultError     SEG/SR could not be built from the results
     +-- DeidentificationError  an instance cannot be de-identified as asked (burned-in text)

    (RulesError, in dicomnode.rules.model, is a ConfigError.)
"""

from __future__ import annotations


class DicomNodeError(Exception):
    """Root of every error dicomnode raises on purpose."""


class ConfigError(DicomNodeError):
    """The configuration is invalid; the message names the file and key."""


class StorageError(DicomNodeError):
    """The spool or the index could not durably persist an instance."""


class SpoolFullError(StorageError):
    """The spool's file system has no space left."""


class StorageInUseError(StorageError):
    """Another process holds the storage's lock; ``pid`` is its id when recorded."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class DatasetTooLargeError(StorageError):
    """A dataset, as received or once inflated, is larger than the node takes (0xA700)."""


class InstanceError(DicomNodeError):
    """A received dataset cannot be accepted as it is."""


class UIDMismatchError(InstanceError):
    """The dataset's SOP Class/Instance UID differs from the C-STORE command's."""


class UnreadableDatasetError(InstanceError):
    """The dataset cannot be parsed or lacks valid identifying attributes."""


class PeerError(DicomNodeError):
    """A remote DICOM node could not be reached or refused the association."""

    permanent = False  # whether retrying without a change of configuration is pointless


class PeerUnreachableError(PeerError):
    """The connection was refused or timed out."""


class AssociationRejectedError(PeerError):
    """The peer answered A-ASSOCIATE-RJ; rejected-permanent means our settings are wrong."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class AssociationAbortedError(PeerError):
    """The association was aborted or the connection dropped."""


class PeerTLSError(PeerError):
    """The TLS handshake with the peer failed: its certificate did not verify, it refused
    ours, or no protocol or cipher was shared (permanent); or the connection dropped."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class PeerHTTPError(PeerError):
    """A DICOMweb service refused a request as a whole (an HTTP error status, or its TLS
    certificate did not verify); 4xx but 408 and 429 are permanent."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class AddressError(DicomNodeError):
    """An ``AE@HOST:PORT`` address or destination name is invalid."""


class RoutingError(DicomNodeError):
    """A completed series version cannot be routed; the routing queue keeps the message."""


class ExportError(DicomNodeError):
    """A volume cannot be written in the asked format (an irregular stack as NIfTI ...)."""


class PipelineError(DicomNodeError):
    """A pipeline job cannot complete; the message says why, for the job record."""


class VolumeError(PipelineError):
    """The series cannot form one geometrically correct volume."""


class StepError(PipelineError):
    """A preprocessing step cannot apply to this volume."""


class OutsideEnvelopeError(PipelineError):
    """The series lies outside the inputs the model was validated on; not run (a refusal)."""


class RunnerError(PipelineError):
    """A model failed to load or to run."""


class ModelTimeoutError(RunnerError):
    """The model exceeded its time limit."""


class ResultError(PipelineError):
    """SEG or SR could not be built from the results."""


class DeidentificationError(DicomNodeError):
    """An instance cannot be de-identified as asked, e.g. its pixels carry burned-in text."""
