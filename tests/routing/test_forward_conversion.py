"""A destination that refuses a compressed transfer syntax gets the instance decompressed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.dcmtk import StoreSCP, dcmtk_convert
from dicomnode.testing.process import poll_until

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_jpeg_ls_is_decompressed_for_a_destination_that_takes_only_uncompressed(
    node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=3, rows=64, columns=64))
    compressed = []
    for path in series.paths:
        target = tmp_path / "jls" / path.name
        target.parent.mkdir(exist_ok=True)
        assert dcmtk_convert(path, target, "jpeg-ls") == JPEGLSLossless
        compressed.append(target)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("- {name: fwd, match: {Modality: CT}, forward_to: [plain]}\n")
    with StoreSCP(
        ae_title="PLAIN",
        sop_classes=[CT_IMAGE],
        transfer_syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ) as plain:
        node = node_factory(
            destinations={"plain": {"ae_title": "PLAIN", "host": "127.0.0.1", "port": plain.port}}
        )
        files = [f for f in map(inspect_file, compressed) if isinstance(f, SendableFile)]
        results = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
        assert all(r.ok for r in results)
        received = plain.wait_for_files(3, timeout=60)
        poll_until(
            lambda: [s.state for s in node.outbox.queue.list_sends()] == ["done"],
            timeout=30,
            what="the send to be done",
        )
        by_uid = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, received)}
        assert len(by_uid) == 3, [str(p) for p in received]
    for source in series.paths:
        original = pydicom.dcmread(source)
        arrived = by_uid[original.SOPInstanceUID]
        assert arrived.file_meta.TransferSyntaxUID in {
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        }
        assert np.array_equal(arrived.pixel_array, original.pixel_array)
