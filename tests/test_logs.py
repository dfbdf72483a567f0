"""Logs are structured JSON and never carry a patient identifier."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pydicom

from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.logs import REDACTED, configure_logging, drop_patient_identifiers, get_logger
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.testing.node import NodeProcess
from dicomnode.testing.process import poll_until

SECRETS = {
    "PatientName": "SECRETSURNAME^GIVEN",
    "PatientID": "PID-SECRET-4242",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACC-SECRET-77",
    "OtherPatientIDs": "OTHER-SECRET-9",
}


def test_the_processor_redacts_identifier_keys_at_any_depth() -> None:
    event = {
        "event": "x",
        "patient_name": "A^B",
        "PatientID": "123",
        "nested": {"AccessionNumber": "9", "ok": 1},
    }
    out = drop_patient_identifiers(None, "info", event)
    assert out["patient_name"] == REDACTED
    assert out["PatientID"] == REDACTED
    assert out["nested"] == {"AccessionNumber": REDACTED, "ok": 1}


def test_configured_logging_writes_json_lines_and_redacts_stdlib_records_too() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    get_logger("test").info("instance_stored", series_uid="1.2.3", patient_name="A^B")
    logging.getLogger("somelib").warning("plain %s", "message")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "instance_stored"
    assert lines[0]["series_uid"] == "1.2.3"
    assert lines[0]["patient_name"] == REDACTED
    assert lines[1]["event"] == "plain message"
    assert lines[1]["level"] == "warning"


def test_no_patient_identifier_reaches_the_node_output(
    node_process: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    series = write_ct_phantom(tmp_path / "ct", CTPhantomSpec(slices=4, rows=32, columns=32))
    for path in series.paths:
        ds = pydicom.dcmread(path)
        for keyword, value in SECRETS.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    bad = pydicom.dcmread(series.paths[0])
    del bad.SeriesInstanceUID  # a rejected instance is logged too
    bad.SOPInstanceUID = pydicom.uid.generate_uid()
    bad_path = tmp_path / "bad.dcm"
    bad.save_as(bad_path, enforce_file_format=True)

    node = node_process(logging={"level": "debug"}).start()
    files = [inspect_file(p) for p in (*series.paths, bad_path)]
    results = send_files(
        [f for f in files if isinstance(f, SendableFile)], parse_address(node.address)
    )
    assert [r.ok for r in results] == [True] * 4 + [False]
    poll_until(lambda: "series_completed" in node.logs(), timeout=30, what="series_completed")
    node.stop()

    output = node.logs()
    assert "instance_stored" in output and "instance_rejected" in output
    for value in SECRETS.values():
        assert value not in output
        assert value.split("^")[0] not in output
    for line in output.splitlines():
        json.loads(line)  # every line is a JSON event
