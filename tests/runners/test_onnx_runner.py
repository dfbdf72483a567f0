"""The onnx runner: the reference CT model converted by tf2onnx, and small hand-built models.

The tensorflow runner is the yardstick: on the CT phantom and the real CT the onnx runner
must give the very labels it gives.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ct_inputs import hu_volume, write_phantom
from structlog.testing import capture_logs

from dicomnode.errors import RunnerError
from dicomnode.models import BuiltinModel, builtin_model
from dicomnode.models import ct_tissue_reference as design
from dicomnode.runners import ModelHost, OnnxRunner, parse_runner_config

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

EDGES_HU = [-1000, -191, -190, -30, -29, 150, 151, 299, 300, 1500]
BUILTIN = "builtin:ct-tissue-reference-onnx"


def host_of(base_dir: Path, **runner: Any) -> ModelHost:
    return ModelHost({"model": parse_runner_config({"kind": "onnx", **runner})}, base_dir)


@pytest.fixture(scope="module")
def ct_host() -> Iterator[ModelHost]:
    with host_of(Path(), model=BUILTIN, batch_size=3) as host:
        host.load()
        yield host


def edges_volume(slices: int = 7) -> np.ndarray[Any, np.dtype[np.float32]]:
    row = np.array(EDGES_HU, np.float32)
    return np.stack([np.stack([row, row[::-1]])] * slices).astype(np.float32)


def save(model: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def channels_first_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PyTorch-shaped slice model: (batch, 1, y, x) -> (batch, 2, y, x), [hu, -hu]."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([1.0, -1.0], np.float32).reshape(2, 1, 1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "channels_first",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save(model, tmp_path_factory.mktemp("onnx") / "channels_first.onnx")


@pytest.fixture(scope="module")
def two_output_volume_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume model (1, z, y, x, 1) with outputs ``scores`` [hu, -hu] and ``copy``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["v"], ["negative"]),
            helper.make_node("Concat", ["v", "negative"], ["scores"], axis=-1),
            helper.make_node("Identity", ["v"], ["copy"]),
        ],
        "volume",
        [helper.make_tensor_value_info("v", TensorProto.DOUBLE, [1, "z", "y", "x", 1])],
        [
            helper.make_tensor_value_info("scores", TensorProto.DOUBLE, [1, "z", "y", "x", 2]),
            helper.make_tensor_value_info("copy", TensorProto.DOUBLE, [1, "z", "y", "x", 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save(model, tmp_path_factory.mktemp("onnx") / "volume.onnx")


def test_the_converted_reference_model_puts_every_hu_range_edge_in_its_class(
    ct_host: ModelHost,
) -> None:
    volume = edges_volume()
    probabilities = ct_host.predict("model", volume)
    assert probabilities.shape == (*volume.shape, 4)
    assert probabilities.dtype == np.float32
    assert np.array_equal(probabilities.argmax(axis=-1), design.true_labels(volume))
    np.testing.assert_allclose(probabilities, design.probabilities(volume), atol=1e-5)


def test_slices_go_in_batches_and_output_labels_gives_the_argmax(ct_host: ModelHost) -> None:
    rng = np.random.default_rng(4)
    volume = rng.uniform(-1100, 2000, size=(7, 5, 6)).round().astype(np.float32)
    volume[3] = 40.0  # one slice of soft tissue only, to see order kept
    batched = ct_host.predict("model", volume)  # batches of 3, 3 and 1
    with host_of(Path(), model=BUILTIN, batch_size=16, output_labels=True) as whole:
        labels = whole.predict("model", volume)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, batched.argmax(axis=-1))
    assert (labels[3] == design.SOFT_TISSUE).all()
    assert np.array_equal(labels, design.true_labels(volume))


def test_the_runner_says_which_provider_runs_the_model(ct_host: ModelHost) -> None:
    runner = ct_host.runner("model")
    assert isinstance(runner, OnnxRunner)
    assert runner.providers == ("CPUExecutionProvider",)
    assert runner.device == "CPUExecutionProvider"


def same_labels_as_tensorflow(volume: np.ndarray[Any, Any], keras: Any) -> None:
    config = {"model": "builtin:ct-tissue-reference", "output_labels": True, "batch_size": 4}
    tensorflow = ModelHost({"ct": parse_runner_config({"kind": "tensorflow", **config})}, Path())
    onnx = ModelHost(
        {"ct": parse_runner_config({"kind": "onnx", **config, "model": BUILTIN})}, Path()
    )
    with tensorflow, onnx:
        expected = tensorflow.predict("ct", volume)
        labels = onnx.predict("ct", volume)
    assert labels.dtype == expected.dtype == np.uint8
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # every class is there to disagree on


def test_onnx_gives_the_tensorflow_labels_on_the_ct_phantom(tmp_path: Path, keras: Any) -> None:
    same_labels_as_tensorflow(hu_volume(write_phantom(tmp_path)), keras)


def test_onnx_gives_the_tensorflow_labels_on_the_real_ct(
    real_ct_images: list[Path], keras: Any
) -> None:
    same_labels_as_tensorflow(hu_volume(real_ct_images), keras)


def test_the_onnx_runner_never_imports_tensorflow() -> None:
    """A node running ONNX models pays neither TensorFlow's import nor its memory."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from dicomnode.runners import ModelHost, parse_runner_config\n"
        "config = {'kind': 'onnx', 'model': 'builtin:ct-tissue-reference-onnx',"
        " 'output_labels': True}\n"
        "with ModelHost({'ct': parse_runner_config(config)}, base_dir='.') as host:\n"
        "    labels = host.predict('ct', np.full((2, 4, 4), 40.0, np.float32))\n"
        "assert (labels == 2).all(), labels\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('onnxruntime' in sys.modules, heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True []"


def test_a_channels_first_model_gets_channels_after_the_batch(channels_first_model: Path) -> None:
    with host_of(
        channels_first_model.parent,
        model=channels_first_model.name,
        input_channels_last=False,
        batch_size=2,
    ) as host:
        volume = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
        output = host.predict("model", volume)
    assert output.shape == (3, 2, 4, 2)  # classes back at the end
    np.testing.assert_allclose(output[..., 0], volume)
    np.testing.assert_allclose(output[..., 1], -volume)


def test_a_volume_model_picks_its_output_and_gets_its_input_type(
    two_output_volume_model: Path,
) -> None:
    folder, name = two_output_volume_model.parent, two_output_volume_model.name
    with pytest.raises(RunnerError, match=r"outputs \['scores', 'copy'\]; set `output`"):
        host_of(folder, model=name, mode="volume").load()
    volume = np.linspace(-2, 2, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    with host_of(folder, model=name, mode="volume", output="scores") as host:
        scores = host.predict("model", volume)
    assert scores.shape == (2, 3, 4, 2)
    assert scores.dtype == np.float64  # the model's DOUBLE, cast on the way in
    np.testing.assert_allclose(scores[..., 1], -volume, rtol=1e-6)
    with host_of(folder, model=name, mode="volume", output="scores", output_labels=True) as host:
        labels = host.predict("model", volume)
    assert np.array_equal(labels, (volume < 0).astype(np.uint8))


def test_an_unavailable_provider_is_left_out_with_a_warning() -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to fall back from")
    with capture_logs() as events:
        host = host_of(
            Path(), model=BUILTIN, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        host.load()
    warning = next(e for e in events if e["event"] == "onnx_providers_unavailable")
    assert warning["missing"] == ["CUDAExecutionProvider"]
    assert warning["using"] == ["CPUExecutionProvider"]
    runner = host.runner("model")
    assert isinstance(runner, OnnxRunner)
    assert runner.device == "CPUExecutionProvider"
    only_cuda = host_of(Path(), model=BUILTIN, providers=["CUDAExecutionProvider"])
    with pytest.raises(RunnerError, match=r"providers \['CUDAExecutionProvider'\]: none is av"):
        only_cuda.load()


def test_a_missing_or_broken_model_file_fails_load_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match=f"model file {tmp_path}/absent.onnx does not exist"):
        host_of(tmp_path, model="absent.onnx").load()
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(RunnerError, match=f"model 'model': cannot load {tmp_path}/broken.onnx: "):
        host_of(tmp_path, model="broken.onnx").load()


def test_a_mode_that_does_not_fit_the_model_fails_load() -> None:
    with pytest.raises(RunnerError, match=r"takes inputs of rank 4 .* mode 'volume' feeds rank 5"):
        host_of(Path(), model=BUILTIN, mode="volume").load()


def test_the_wrong_number_of_channels_is_refused(ct_host: ModelHost) -> None:
    with pytest.raises(RunnerError, match="takes 1 input channel"):
        ct_host.predict("model", np.zeros((2, 3, 3, 2), np.float32))


def test_a_damaged_builtin_model_fails_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(builtin_model("ct-tissue-reference-onnx").path, tmp_path / "ct.onnx")
    with (tmp_path / "ct.onnx").open("ab") as file:
        file.write(b"\0")
    damaged = BuiltinModel("ct-tissue-reference-onnx", "ct.onnx", "0" * 64, "damaged copy")
    monkeypatch.setattr(BuiltinModel, "path", property(lambda _self: tmp_path / "ct.onnx"))
    monkeypatch.setattr("dicomnode.runners.batches.builtin_model", lambda _name: damaged)
    with pytest.raises(RunnerError, match=r"built-in model file .*/ct\.onnx is damaged"):
        host_of(tmp_path, model=BUILTIN).load()
