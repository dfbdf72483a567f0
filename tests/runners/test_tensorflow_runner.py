"""The tensorflow runner on real model files: the shipped reference model and test-built ones.

TensorFlow takes seconds to import, so the models are built once per session (conftest)
and each test stays small.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicomnode.errors import RunnerError
from dicomnode.models import BuiltinModel, builtin_model
from dicomnode.models import ct_tissue_reference as design
from dicomnode.runners import ModelHost, TensorFlowRunner, parse_runner_config

EDGES_HU = [-1000, -191, -190, -30, -29, 150, 151, 299, 300, 1500]


def host_of(base_dir: Path, **runner: Any) -> ModelHost:
    return ModelHost({"model": parse_runner_config({"kind": "tensorflow", **runner})}, base_dir)


@pytest.fixture(scope="module")
def ct_host(keras: Any) -> Any:
    """The built-in CT tissue model, loaded once for the module (as a node keeps it)."""
    host = host_of(Path(), model="builtin:ct-tissue-reference", batch_size=3)
    host.load()
    yield host
    host.close()


def hu_volume(slices: int = 7) -> np.ndarray[Any, np.dtype[np.float32]]:
    """(slices, 2, 10): every range edge in each slice, shifted by a little per slice."""
    row = np.array(EDGES_HU, np.float32)
    plane = np.stack([row, row[::-1]])
    return np.stack([plane] * slices).astype(np.float32)


def test_the_reference_model_puts_every_hu_range_edge_in_its_class(ct_host: ModelHost) -> None:
    volume = hu_volume()
    probabilities = ct_host.predict("model", volume)
    assert probabilities.shape == (*volume.shape, 4)
    assert probabilities.dtype == np.float32
    assert np.array_equal(probabilities.argmax(axis=-1), design.true_labels(volume))
    assert design.CLASSES == ("background", "fat", "soft_tissue", "bone")
    np.testing.assert_allclose(probabilities, design.probabilities(volume), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_slices_go_in_batches_and_come_back_in_order(ct_host: ModelHost, keras: Any) -> None:
    """batch_size 3 on 7 slices: batches of 3, 3 and 1, the same as one batch of all."""
    rng = np.random.default_rng(4)
    volume = rng.uniform(-1100, 2000, size=(7, 5, 6)).round().astype(np.float32)
    volume[3] = 40.0  # one slice of soft tissue only, to see order kept
    batched = ct_host.predict("model", volume)
    whole = host_of(Path(), model="builtin:ct-tissue-reference", batch_size=16)
    np.testing.assert_allclose(batched, whole.predict("model", volume), atol=1e-6)
    assert (batched[3].argmax(axis=-1) == design.SOFT_TISSUE).all()
    assert np.array_equal(batched.argmax(axis=-1), design.true_labels(volume))


def test_output_labels_gives_the_argmax_per_voxel(ct_host: ModelHost) -> None:
    volume = hu_volume(slices=5)
    host = host_of(Path(), model="builtin:ct-tissue-reference", batch_size=2, output_labels=True)
    labels = host.predict("model", volume)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, design.true_labels(volume))


def test_the_runner_says_which_device_it_uses(ct_host: ModelHost) -> None:
    """TensorFlow picks a GPU when one is present; the runner records (and logs) it."""
    import tensorflow as tf

    runner = ct_host.runner("model")
    assert isinstance(runner, TensorFlowRunner)
    expected = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    assert runner.device is not None
    assert expected in runner.device


@pytest.mark.parametrize("form", ["keras_file", "saved_model"])
def test_a_volume_classifier_gives_class_probabilities(volume_classifier: Any, form: str) -> None:
    path = getattr(volume_classifier, form)
    host = host_of(path.parent, model=path.name, mode="volume")
    host.load()
    low = np.full((4, 3, 3), volume_classifier.center_hu - 100, np.float32)
    high = np.full((4, 3, 3), volume_classifier.center_hu + 100, np.float32)
    for volume, answer in ((low, 0), (high, 1)):
        probabilities = host.predict("model", volume)
        assert probabilities.shape == (2,)
        assert probabilities.argmax() == answer
        assert probabilities.max() > 0.999


def test_a_channels_first_model_gets_channels_after_the_batch(channels_first_model: Path) -> None:
    host = host_of(
        channels_first_model.parent,
        model=channels_first_model.name,
        input_channels_last=False,
        batch_size=2,
    )
    volume = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    output = host.predict("model", volume)
    assert output.shape == (3, 2, 4, 2)  # classes back at the end
    np.testing.assert_allclose(output[..., 0], volume)
    np.testing.assert_allclose(output[..., 1], -volume)


def test_a_missing_model_file_fails_load_naming_it(tmp_path: Path) -> None:
    host = host_of(tmp_path, model="models/absent.keras")
    with pytest.raises(RunnerError, match=f"model file {tmp_path}/models/absent.keras does not"):
        host.load()


def test_a_file_that_is_not_a_model_fails_load_naming_it(tmp_path: Path, keras: Any) -> None:
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    host = host_of(tmp_path, model="broken.keras")
    with pytest.raises(RunnerError, match=f"model 'model': cannot load {tmp_path}/broken.keras: "):
        host.load()
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(RunnerError, match=r"neither a \.keras file nor a SavedModel folder"):
        host_of(tmp_path, model="weights.h5").load()


def test_a_mode_that_does_not_fit_the_model_fails_load(keras: Any) -> None:
    host = host_of(Path(), model="builtin:ct-tissue-reference", mode="volume")
    with pytest.raises(RunnerError, match=r"takes inputs of rank 4 .* mode 'volume' feeds rank 5"):
        host.load()


def test_a_missing_signature_names_the_ones_there(volume_classifier: Any) -> None:
    path = volume_classifier.saved_model
    host = host_of(path.parent, model=path.name, mode="volume", signature="predict")
    with pytest.raises(RunnerError, match="no signature 'predict'; signatures: serve, serving_def"):
        host.load()


def test_the_wrong_number_of_channels_is_refused(ct_host: ModelHost) -> None:
    with pytest.raises(RunnerError, match="takes 1 input channel"):
        ct_host.predict("model", np.zeros((2, 3, 3, 2), np.float32))


def test_a_damaged_builtin_model_fails_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped file is checked against its digest: a damaged install fails config check."""
    shutil.copy(builtin_model("ct-tissue-reference").path, tmp_path / "ct.keras")
    with (tmp_path / "ct.keras").open("ab") as file:
        file.write(b"\0")
    damaged = BuiltinModel("ct-tissue-reference", "ct.keras", "0" * 64, "damaged copy")
    monkeypatch.setattr(BuiltinModel, "path", property(lambda _self: tmp_path / "ct.keras"))
    monkeypatch.setattr("dicomnode.runners.batches.builtin_model", lambda _name: damaged)
    host = host_of(tmp_path, model="builtin:ct-tissue-reference")
    with pytest.raises(RunnerError, match=r"built-in model file .*/ct\.keras is damaged"):
        host.load()
