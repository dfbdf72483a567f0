"""The triton runner: against Triton itself (NVIDIA PyTriton serving the reference CT model)
and against a fake KServe V2 server that fails, stalls or refuses on cue.

PyTriton needs numpy < 2, so it runs from a venv of its own, made once into a cache
folder (dicomnode.testing.triton_server). Where it cannot be made the Triton tests skip with
the reason, except under CI (``CI=true``), where they fail: a skip would hide that the
acceptance test never ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ct_inputs import PIPELINE, reference_models, write_phantom
from kserve_fake import MODEL, FakeKServe, fake_kserve
from pydicom.dataset import Dataset
from structlog.testing import capture_logs

from dicomnode.errors import RunnerError
from dicomnode.models import builtin_model
from dicomnode.models import ct_tissue_reference as design
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.engine import PipelineEngine
from dicomnode.runners import ModelHost, parse_runner_config
from dicomnode.testing.ports import LOOPBACK, refusing_port
from dicomnode.testing.process import PeerStartError
from dicomnode.testing.triton_server import PyTritonServer, ensure_venv

pytest.importorskip("tritonclient.http", reason="the triton extra is not installed")

TRITON_MODEL = "ct-tissue-reference"


@pytest.fixture(scope="session")
def pytriton_python() -> Path:
    try:
        return ensure_venv()
    except PeerStartError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PyTriton venv could not be made: {exc}")
        pytest.skip(f"the PyTriton venv could not be made: {exc}")


@pytest.fixture(scope="module")
def triton(pytriton_python: Path) -> Iterator[PyTritonServer]:
    """Triton on loopback serving the reference CT model (its ONNX file, in onnxruntime)."""
    model = builtin_model("ct-tissue-reference-onnx").path
    with PyTritonServer(pytriton_python, model, TRITON_MODEL) as server:
        yield server


def triton_host(url: str, **runner: Any) -> ModelHost:
    config = {"kind": "triton", "url": url, "model_name": TRITON_MODEL, **runner}
    return ModelHost({"model": parse_runner_config(config)}, Path())


def run_pipeline(models: dict[str, Any], paths: list[Path]) -> dict[str, Dataset]:
    _, pipelines = reference_definitions()
    with ModelHost(models, Path()) as host:
        result = PipelineEngine(pipelines, host).run(PIPELINE, paths)
    return {str(ds.Modality): ds for ds in result.datasets}


def numbers(sr: Dataset) -> list[tuple[str, str, float]]:
    """Every NUM of the SR: (concept, unit, value), in document order."""
    found: list[tuple[str, str, float]] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                unit = value.MeasurementUnitsCodeSequence[0].CodeValue
                name = item.ConceptNameCodeSequence[0].CodeMeaning
                found.append((name, unit, float(value.NumericValue)))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def frames(seg: Dataset) -> list[tuple[int, str]]:
    """(segment number, source image UID) of each SEG frame."""
    return [
        (
            int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
        )
        for frame in seg.PerFrameFunctionalGroupsSequence
    ]


def same_results_as_in_process(paths: list[Path], url: str) -> None:
    """The SEG's frames and pixels and the SR's numbers; not the summary image, whose
    text names the model's provenance (the file's digest in process, none over Triton)."""
    in_process, _ = reference_definitions()
    expected = run_pipeline(in_process, paths)
    remote = run_pipeline(
        reference_models({"kind": "triton", "url": url, "model_name": TRITON_MODEL}), paths
    )
    assert sorted(remote) == sorted(expected)
    assert {"SEG", "SR"} <= set(expected)
    seg, expected_seg = remote["SEG"], expected["SEG"]
    assert frames(seg) == frames(expected_seg)
    assert len({segment for segment, _ in frames(seg)}) == 3  # fat, soft tissue and bone
    assert np.array_equal(seg.pixel_array, expected_seg.pixel_array)
    values = numbers(remote["SR"])
    assert values, "the SR has no measurements"
    assert values == numbers(expected["SR"])


def test_triton_gives_the_same_seg_and_sr_as_the_in_process_runner_on_the_real_ct(
    triton: PyTritonServer, real_ct_images: list[Path]
) -> None:
    same_results_as_in_process(real_ct_images, triton.url)


def test_triton_gives_the_same_seg_and_sr_as_the_in_process_runner_on_the_ct_phantom(
    triton: PyTritonServer, tmp_path: Path
) -> None:
    same_results_as_in_process(write_phantom(tmp_path), triton.url)


def test_triton_batches_slices_and_reduces_scores_to_labels(triton: PyTritonServer) -> None:
    rng = np.random.default_rng(7)
    volume = rng.uniform(-1100, 2000, size=(7, 5, 6)).round().astype(np.float32)
    with triton_host(triton.url, batch_size=3) as host:
        scores = host.predict("model", volume)  # batches of 3, 3 and 1
    np.testing.assert_allclose(scores, design.probabilities(volume), atol=1e-5)
    with triton_host(triton.url, batch_size=64, output_labels=True) as host:
        labels = host.predict("model", volume)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, design.true_labels(volume))


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        ({"model_name": "nope"}, r"'nope' on Triton at .*: metadata failed: \[404\] .*nope"),
        ({"input": "x"}, r"no input 'x'; inputs: \['hu'\]"),
        ({"batch_size": 65}, r"batch_size 65 is above the model's max_batch_size 64"),
        ({"mode": "volume"}, r"takes inputs of rank 4 .* mode 'volume' feeds rank 5"),
    ],
)
def test_what_does_not_fit_the_served_model_fails_load(
    triton: PyTritonServer, runner: dict[str, Any], message: str
) -> None:
    with pytest.raises(RunnerError, match=message):
        triton_host(triton.url, **runner).load()


def fake_host(fake: FakeKServe, **runner: Any) -> ModelHost:
    config = {"kind": "triton", "url": fake.url, "model_name": MODEL, "retry_backoff_seconds": 0}
    return ModelHost({"model": parse_runner_config({**config, **runner})}, Path())


@pytest.fixture
def fake() -> Iterator[FakeKServe]:
    with fake_kserve() as server:
        yield server


def test_5xx_answers_are_retried_with_a_warning_each(fake: FakeKServe) -> None:
    volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    fake.failures = [503, 500]
    with capture_logs() as events, fake_host(fake, retries=2) as host:
        output = host.predict("model", volume)
    np.testing.assert_array_equal(output[..., 0], volume)
    retried = [e for e in events if e["event"] == "triton_request_retried"]
    assert [(e["attempt"], e["request"]) for e in retried] == [(1, "infer"), (2, "infer")]
    assert fake.infer_requests == 3


def test_a_server_that_keeps_failing_fails_the_call_and_the_next_call_works(
    fake: FakeKServe,
) -> None:
    """The failure is the job's: the model stays usable once the server recovers."""
    volume = np.zeros((2, 3, 4), np.float32)
    fake.failures = [503, 503, 503]
    with fake_host(fake, retries=2) as host:
        with pytest.raises(RunnerError, match=r"infer failed \(after 3 attempts\): \[503\] scr"):
            host.predict("model", volume)
        assert host.predict("model", volume).shape == (2, 3, 4, 1)
    assert fake.infer_requests == 4


def test_a_4xx_answer_is_not_retried(fake: FakeKServe) -> None:
    fake.failures = [400]
    host = fake_host(fake, retries=3)
    with host, pytest.raises(RunnerError, match=r"infer failed: \[400\] scripted failure 400"):
        host.predict("model", np.zeros((1, 2, 2), np.float32))
    assert fake.infer_requests == 1


def test_a_request_past_its_limit_fails_without_a_retry(fake: FakeKServe) -> None:
    fake.hold = threading.Event()
    with fake_host(fake, retries=3, request_timeout_seconds=0.5) as host:
        host.load()
        with pytest.raises(RunnerError, match=r"did not answer the infer request within 0\.5 s"):
            host.predict("model", np.zeros((1, 2, 2), np.float32))
    assert fake.infer_requests == 1


def test_an_unreachable_server_fails_load_after_the_retries() -> None:
    url = f"{LOOPBACK}:{refusing_port()}"  # nothing listens there
    config = {"kind": "triton", "url": url, "model_name": "m", "retries": 2}
    host = ModelHost({"model": parse_runner_config({**config, "retry_backoff_seconds": 0})}, Path())
    with (
        capture_logs() as events,
        pytest.raises(
            RunnerError,
            match=rf"'m' on Triton at {url}: metadata failed \(after 3 attempts\): Conn",
        ),
    ):
        host.load()
    assert sum(e["event"] == "triton_request_retried" for e in events) == 2


def test_the_triton_runner_never_imports_tensorflow(fake: FakeKServe) -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from dicomnode.runners import ModelHost, parse_runner_config\n"
        f"config = {{'kind': 'triton', 'url': '{fake.url}', 'model_name': '{MODEL}'}}\n"
        "with ModelHost({'m': parse_runner_config(config)}, base_dir='.') as host:\n"
        "    host.predict('m', np.ones((2, 3, 3), np.float32))\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
