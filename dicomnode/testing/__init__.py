"""Real DICOM peers on loopback for tests and benchmarks: Orthanc, DCMTK, GDCM.

Every peer is a context manager that owns a temporary directory and ends the one
process it started, by PID, however the ``with`` block ends.
"""

from dicomnode.testing.echoscu import echoscu
from dicomnode.testing.orthanc import Modality, Orthanc, OrthancRestError, orthanc_binary
from dicomnode.testing.ports import (
    LOOPBACK,
    free_port,
    listens,
    port_accepts,
    require_loopback,
    wait_for_port,
)
from dicomnode.testing.process import (
    HarnessError,
    HarnessTimeoutError,
    ManagedProcess,
    PeerStartError,
    poll_until,
)
from dicomnode.testing.storescp import StoreSCP, acceptor_profile
from dicomnode.testing.storescu import StoreSCUProcess, association_profile, storescu
from dicomnode.testing.storescu_log import StoreAttempt, acknowledged_uids, parse_storescu_log
from dicomnode.testing.transcode import CODECS, LOSSY_CODECS, Codec, convert_files, dcmtk_convert

__all__ = [
    "CODECS",
    "LOOPBACK",
    "LOSSY_CODECS",
    "Codec",
    "HarnessError",
    "HarnessTimeoutError",
    "ManagedProcess",
    "Modality",
    "Orthanc",
    "OrthancRestError",
    "PeerStartError",
    "StoreAttempt",
    "StoreSCP",
    "StoreSCUProcess",
    "acceptor_profile",
    "acknowledged_uids",
    "association_profile",
    "convert_files",
    "dcmtk_convert",
    "echoscu",
    "free_port",
    "listens",
    "orthanc_binary",
    "parse_storescu_log",
    "poll_until",
    "port_accepts",
    "require_loopback",
    "storescu",
    "wait_for_port",
]
