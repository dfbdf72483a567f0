"""The DCMTK peers and the DCMTK/GDCM transcoders under their first address.

Kept so that ``from dicomnode.testing.dcmtk import StoreSCP`` goes on working; new code
imports from the module that owns each name (`storescp`, `storescu`, `storescu_log`,
`echoscu`, `transcode`, `executables`). The harness names this module used to import
(ports, processes, errors) stay reachable here too, for code that took them from it.
"""

from dicomnode.testing.echoscu import echoscu
from dicomnode.testing.executables import BIN
from dicomnode.testing.ports import LOOPBACK, free_port, require_loopback, wait_for_port
from dicomnode.testing.process import (
    HarnessError,
    HarnessTimeoutError,
    ManagedProcess,
    PeerStartError,
    poll_until,
)
from dicomnode.testing.storescp import StoreSCP, acceptor_profile
from dicomnode.testing.storescu import (
    MAX_PRESENTATION_CONTEXTS,
    Proposal,
    StoreSCUProcess,
    association_profile,
    storescu,
)
from dicomnode.testing.storescu_log import StoreAttempt, acknowledged_uids, parse_storescu_log
from dicomnode.testing.transcode import (
    CODECS,
    LOSSY_CODECS,
    Codec,
    convert_files,
    dcmtk_convert,
)

__all__ = [
    "BIN",
    "CODECS",
    "LOOPBACK",
    "LOSSY_CODECS",
    "MAX_PRESENTATION_CONTEXTS",
    "Codec",
    "HarnessError",
    "HarnessTimeoutError",
    "ManagedProcess",
    "PeerStartError",
    "Proposal",
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
    "parse_storescu_log",
    "poll_until",
    "require_loopback",
    "storescu",
    "wait_for_port",
]
