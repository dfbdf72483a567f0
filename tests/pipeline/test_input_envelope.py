"""Input envelopes: a series outside the inputs a model was validated on is not run (or is
run and flagged), with the reason in the job, the "AI not run" SR and ``/metrics``."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from structlog.testing import capture_logs

from dicomnode.cli import main as dicomnode_main
from dicomnode.dicom.address import parse_address
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.errors import ConfigError, OutsideEnvelopeError
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.pipeline.definition import parse_models
from dicomnode.pipeline.envelope import EnvelopeVerdict, header_reasons, value_reasons
from dicomnode.pipeline.jobs import NOT_RUN_REPORT
from dicomnode.runners.envelope import InputEnvelope, ValueRange
from dicomnode.testing.cli import config_beside
from dicomnode.testing.models import bone_pipeline
from dicomnode.testing.process import poll_until
from dicomnode.volume import Geometry, SliceRef, Volume

# ---------------------------------------------------------------- the check, pure


def _ct(**attributes: Any) -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "2.5"
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.KVP = "120"
    ds.Manufacturer = "SIEMENS Healthineers"
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _envelope(**keys: Any) -> InputEnvelope:
    return InputEnvelope.model_validate(keys)


@pytest.mark.parametrize(
    ("keys", "header", "reason"),
    [
        (
            {"slice_thickness_mm": {"min": 2}},
            {"SliceThickness": "0.625"},
            "SliceThickness 0.625 mm below the model's minimum 2 mm",
        ),
        (
            {"slice_thickness_mm": {"max": 1}},
            {},
            "SliceThickness 2.5 mm above the model's maximum 1 mm",
        ),
        (
            {"pixel_spacing_mm": {"min": 0.5, "max": 1.0}},
            {"PixelSpacing": ["1.2", "0.7"]},
            "PixelSpacing 1.2 mm above the model's maximum 1 mm",
        ),
        ({"kvp": {"min": 100}}, {"KVP": "80"}, "KVP 80 kV below the model's minimum 100 kV"),
        (
            {"modalities": ["CT"]},
            {"Modality": "MR"},
            "Modality MR not among the model's modalities CT",
        ),
        (
            {"body_parts": ["chest", "ABDOMEN"]},
            {"BodyPartExamined": "HEAD"},
            "BodyPartExamined HEAD not among the model's body parts chest, ABDOMEN",
        ),
        (
            {"manufacturers": ["GE", "Philips"]},
            {},
            "Manufacturer SIEMENS Healthineers not among the model's manufacturers GE, Philips",
        ),
        (
            {"body_parts": ["CHEST"]},
            {"BodyPartExamined": None},
            "BodyPartExamined missing; the model was validated on CHEST",
        ),
        (
            {"kvp": {"min": 80, "max": 140}},
            {"KVP": None},
            "KVP missing; the model was validated on 80 to 140 kV",
        ),
    ],
)
def test_each_bound_names_the_attribute_the_value_and_the_bound(
    keys: dict[str, Any], header: dict[str, Any], reason: str
) -> None:
    assert header_reasons(_envelope(**keys), [_ct(**header)]) == [reason]


def test_a_value_that_is_no_number_is_outside() -> None:
    ds = _ct()
    # As read from a file: a DS that pydicom cannot convert raises when accessed.
    ds[0x00180050] = RawDataElement(Tag(0x00180050), "DS", 4, b"thin", 0, True, True)
    assert header_reasons(_envelope(slice_thickness_mm={"max": 5}), [ds]) == [
        "SliceThickness 'thin' is not a number"
    ]


def test_a_series_inside_every_bound_has_no_reason() -> None:
    envelope = _envelope(
        modalities=["ct"],
        body_parts=["Chest"],
        slice_thickness_mm={"min": 1, "max": 5},
        pixel_spacing_mm={"min": 0.5, "max": 1},
        kvp={"min": 80, "max": 140},
        manufacturers=["siemens"],  # a case-insensitive part of the Manufacturer
    )
    assert header_reasons(envelope, [_ct(), _ct()]) == []


def test_a_value_that_differs_among_instances_is_checked_for_each() -> None:
    sources = [_ct(SliceThickness="1"), _ct(SliceThickness="1"), _ct(SliceThickness="0.5")]
    sources.append(_ct(SliceThickness=None))
    reasons = header_reasons(_envelope(slice_thickness_mm={"min": 0.8}), sources)
    assert reasons == [
        "SliceThickness missing (in 1 of 4 images); the model was validated on at least 0.8 mm",
        "SliceThickness 0.5 mm (in 1 of 4 images) below the model's minimum 0.8 mm",
    ]


def test_an_enhanced_image_is_read_in_its_functional_groups() -> None:
    measures = Dataset()
    measures.SliceThickness = "0.6"
    measures.PixelSpacing = ["0.5", "0.5"]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds = _ct(SliceThickness=None, PixelSpacing=None)
    ds.SharedFunctionalGroupsSequence = [shared]
    reasons = header_reasons(_envelope(slice_thickness_mm={"min": 1}), [ds])
    assert reasons == ["SliceThickness 0.6 mm below the model's minimum 1 mm"]


def _volume(array: npt.NDArray[Any], units: str) -> Volume:
    geometry = Geometry(
        origin=(0.0, 0.0, 0.0),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        slice_direction=(0.0, 0.0, 1.0),
        spacing=(1.0, 1.0, 1.0),
    )
    refs = tuple(SliceRef("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{z}") for z in range(len(array)))
    return Volume(array.astype(np.float32), geometry, refs, modality="CT", units=units)


def test_values_compare_robust_ends_with_the_bounds() -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1000, 1000, size=(4, 32, 32))
    hu[0, 0, :5] = 30000  # a few hot pixels (0.1 %): no reason
    inside = ValueRange(units="HU", min=-1024, max=1100)
    assert value_reasons(inside, [_volume(hu, "HU")]) == []
    raw = _volume(hu + 1024, "HU")  # stored values taken for HU: a wrong rescale
    (reason,) = value_reasons(ValueRange(units="HU", max=1100), [raw])
    assert reason.startswith("HU 99th percentile 20") and "above the model's maximum 1100" in reason
    (low,) = value_reasons(ValueRange(units="HU", min=-500), [_volume(hu, "HU")])
    assert low.startswith("HU 1st percentile -9") and low.endswith("below the model's minimum -500")


def test_values_are_checked_in_the_declared_units_or_refused() -> None:
    source = _volume(np.full((2, 4, 4), 5000.0), "BQML")
    suv = _volume(np.full((2, 4, 4), 3.0), "SUVbw")
    assert value_reasons(ValueRange(units="SUVbw", max=2.0), [source, suv]) == [
        "SUVbw 99th percentile 3 above the model's maximum 2"
    ]
    assert value_reasons(ValueRange(units="HU", max=2.0), [source, suv]) == [
        "values in HU cannot be checked: the series and its preprocessed volume are in BQML, SUVbw"
    ]


def test_skip_refuses_and_flag_gathers() -> None:
    skipping = EnvelopeVerdict("m", _envelope(kvp={"max": 100}))
    with pytest.raises(
        OutsideEnvelopeError, match=r"^outside the input envelope of model 'm': KVP"
    ):
        skipping.check_headers([_ct()])
    flagging = EnvelopeVerdict("m", _envelope(kvp={"max": 100}, on_outside="flag"))
    flagging.check_headers([_ct(StationName="CT1", ManufacturerModelName="Force")])
    assert flagging.as_dict() == {
        "model": "m",
        "action": "flag",
        "outside": ["KVP 120 kV above the model's maximum 100 kV"],
        "scanner": {"manufacturer": "SIEMENS Healthineers", "model": "Force", "station": "CT1"},
    }


# ---------------------------------------------------------------- the declaration

MODEL = {"kind": "python", "function": "dicomnode.testing.models:slow_threshold"}


@pytest.mark.parametrize(
    ("envelope", "key", "problem"),
    [
        ({"kvp": {"min": 140, "max": 80}}, "models.m.envelope.kvp", "min 140 is above max 80"),
        ({"values": {"units": "HU%", "max": 1}}, "models.m.envelope.values.units", "'HU'"),
        ({"slice_thickness": {"max": 1}}, "models.m.envelope.slice_thickness", "unknown key"),
        ({"on_outside": "warn"}, "models.m.envelope.on_outside", "'skip' or 'flag'"),
    ],
)
def test_a_bad_envelope_is_refused_naming_the_file_and_key(
    envelope: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_models({"m": {**MODEL, "envelope": envelope}}, "node.yaml")
    assert f"node.yaml: {key}: " in str(caught.value)
    assert problem in str(caught.value)


def test_config_check_names_the_envelope_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            storage: {{path: {tmp_path / "var"}}}
            models:
              onnx-model:
                kind: onnx
                model: builtin:ct-tissue-reference-onnx
                envelope: {{slice_thickness_mm: {{min: 5, max: 2}}}}
            """
        )
    )
    assert dicomnode_main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "models.onnx-model.envelope.slice_thickness_mm" in err
    assert "min 5 is above max 2" in err
    assert str(config) in err


# ---------------------------------------------------------------- a node, end to end

SPEC = CTPhantomSpec(slices=4, rows=32, columns=32)  # 2.5 mm slices, 0.8 mm pixels, 120 kV
PHANTOM_SCANNER = {
    "manufacturer": "dicomnode phantom",
    "model": "synthetic CT",
    "station": "PHANTOM",
}
RUNS = {"seconds": 0.0, "threshold": 300.0}
THIN_ONLY = {"slice_thickness_mm": {"max": 1.0}}  # the phantom's 2.5 mm slices lie outside
VALIDATED_ON = {
    "modalities": ["CT"],
    "body_parts": ["ABDOMEN"],
    "slice_thickness_mm": {"min": 1, "max": 5},
    "pixel_spacing_mm": {"min": 0.5, "max": 1},
    "kvp": {"min": 80, "max": 140},
    "manufacturers": ["phantom"],
    "values": {"units": "HU", "min": -1100, "max": 3000},
}


def _get(node: Node, path: str) -> Any:
    assert node.admin is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin.port}{path}", timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def _outside_counts(node: Node) -> dict[tuple[str, str], float]:
    return {
        (s.labels["model"], s.labels["pipeline"]): s.value
        for family in text_string_to_metric_families(_get(node, "/metrics"))
        for s in family.samples
        if s.name == "dicomnode_envelope_outside_total"
        and {k: s.labels[k] for k in ("manufacturer", "scanner_model", "station")}
        == {
            "manufacturer": "dicomnode phantom",
            "scanner_model": "synthetic CT",
            "station": "PHANTOM",
        }
    }


def _sr_of(node: Node, series_uid: str) -> Dataset:
    series = node.index.find_series(series_uid)
    assert series is not None
    (instance,) = node.index.instances_of(series.id)
    return pydicom.dcmread(node.spool.path(instance.spool_name))


def _texts(items: Any) -> list[str]:
    """Every TEXT value in an SR content tree."""
    found = []
    for item in items:
        if item.get("TextValue"):
            found.append(str(item.TextValue))
        found += _texts(item.get("ContentSequence", []))
    return found


def test_a_series_outside_is_not_run_with_the_reason_shown_and_counted(
    node_factory: Callable[..., Node], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        "".join(
            f"- {{name: {name}, match: {{Modality: CT}}, pipeline: {name}}}\n"
            for name in ("skipped", "flagged", "validated")
        )
    )
    node = node_factory(
        completion={"quiet_seconds": 1.0, "settle_seconds": 0.3},
        models={
            "thin-model": {**MODEL, "options": RUNS, "envelope": THIN_ONLY},
            "thin-flagging": {
                **MODEL,
                "options": RUNS,
                "envelope": {**THIN_ONLY, "on_outside": "flag"},
            },
            "validated-model": {**MODEL, "options": RUNS, "envelope": VALIDATED_ON},
        },
        pipelines={
            "skipped": bone_pipeline("thin-model", report_not_run=True),
            "flagged": bone_pipeline("thin-flagging"),
            "validated": bone_pipeline("validated-model"),
        },
    )
    series = write_ct_phantom(tmp_path / "ct", SPEC)
    files = [f for f in map(inspect_file, series.paths) if isinstance(f, SendableFile)]
    with capture_logs() as events:
        sent = send_files(files, parse_address(f"DICOMNODE@127.0.0.1:{node.scp.port}"))
        assert all(r.ok for r in sent)

        def finished() -> bool:
            jobs = node.workers.queue.list_jobs()
            return len(jobs) == 3 and all(
                j.state == "done" or NOT_RUN_REPORT in j.timeline for j in jobs
            )

        poll_until(finished, timeout=60, what="three jobs to finish")
    jobs = {j.pipeline: j for j in node.workers.queue.list_jobs()}

    # Not run: refused (no retry), the reason in the job, checked before any decoding.
    skipped = jobs["skipped"]
    reason = "SliceThickness 2.5 mm above the model's maximum 1 mm"
    assert (skipped.state, skipped.attempts) == ("failed", 1)
    assert skipped.error == f"outside the input envelope of model 'thin-model': {reason}"
    assert skipped.timeline["envelope"] == {
        "model": "thin-model",
        "action": "skip",
        "outside": [reason],
        "scanner": PHANTOM_SCANNER,
    }
    stages = [(s["stage"], bool(s.get("failed"))) for s in skipped.timeline["stages"]]
    assert stages == [("envelope", True), ("load", False)]

    # The API (what the web page shows) and the command line show the reason.
    detail = _get(node, f"/api/jobs/pipeline-{skipped.id}")
    assert detail["job"]["error"] == skipped.error
    assert detail["timeline"]["envelope"]["outside"] == [reason]
    config = config_beside(node.config, tmp_path)
    assert dicomnode_main(["jobs", "--kind", "pipeline", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()  # the node's log lines go there too
    listed = {line.split("\t")[2]: line for line in lines if line.startswith("pipeline-")}
    assert listed["skipped"].endswith(f"\t{skipped.error}")
    assert listed["flagged"].endswith(
        f"\tflagged: outside the input envelope of model 'thin-flagging': {reason}"
    )
    assert listed["validated"].endswith("\t")

    # The "AI not run" report says why, in plain words and as it is.
    report = _sr_of(node, skipped.timeline[NOT_RUN_REPORT]["series_uid"])
    texts = _texts(report.ContentSequence)
    assert f"the series lies outside the inputs this algorithm was validated on ({reason})" in texts
    assert skipped.error in texts

    # Flagged: run, done, and the results say so.
    flagged = jobs["flagged"]
    assert flagged.state == "done"
    assert flagged.timeline["envelope"]["action"] == "flag"
    assert flagged.timeline["summary"]["envelope"] == {
        "model": "thin-flagging",
        "outside": [reason],
    }
    (sr_uid,) = [r["series_uid"] for r in flagged.timeline["results"] if r["modality"] == "SR"]
    assert f"input_envelope=outside: {reason}" in _texts(_sr_of(node, sr_uid).ContentSequence)

    # The same series inside the other model's envelope runs, unflagged.
    validated = jobs["validated"]
    assert validated.state == "done"
    assert "envelope" not in validated.timeline
    assert "envelope" not in validated.timeline["summary"]
    assert [s["stage"] for s in validated.timeline["stages"]][:4] == [
        "envelope",
        "load",
        "preprocess",
        "envelope_values",
    ]

    # /metrics counts each run outside, per scanner; the one inside is not counted.
    assert _outside_counts(node) == {("thin-model", "skipped"): 1, ("thin-flagging", "flagged"): 1}
    outside = [e for e in events if e["event"] == "envelope_outside"]
    assert sorted(e["action"] for e in outside) == ["flag", "skip"]
    assert all(e["station"] == "PHANTOM" and e["reasons"] == [reason] for e in outside)
