"""Fixtures for the runner tests: TensorFlow (imported once) and the models tests build."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The volume classifier answers "mean HU above CLASSIFIER_CENTER_HU" with probability
# sigmoid(2 * CLASSIFIER_GAIN * (mean - center)): +-100 HU from the centre is 0.99995 sure.
CLASSIFIER_CENTER_HU = 0.0
CLASSIFIER_GAIN = 0.05


@dataclass(frozen=True)
class ClassifierFiles:
    keras_file: Path
    saved_model: Path
    center_hu: float = CLASSIFIER_CENTER_HU  # mean HU above it: class 1


@contextmanager
def keras_saving() -> Iterator[None]:
    """Keras 3.15's weight saving calls np.array(tensor) the way NumPy 2 deprecates."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        yield


@pytest.fixture(scope="session")
def keras() -> Any:
    """Keras on TensorFlow, imported once for the session (it takes seconds)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


@pytest.fixture(scope="session")
def volume_classifier(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> ClassifierFiles:
    """A two-class volume classifier (mean HU -> softmax), as .keras and as SavedModel."""
    volume = keras.Input(shape=(None, None, None, 1), name="volume")
    mean = keras.layers.GlobalAveragePooling3D(name="mean_hu")(volume)
    probabilities = keras.layers.Dense(2, activation="softmax", name="classes")(mean)
    model = keras.Model(volume, probabilities, name="mean_hu_classifier")
    gain, centre = CLASSIFIER_GAIN, CLASSIFIER_CENTER_HU
    model.get_layer("classes").set_weights(
        [
            np.array([[-gain, gain]], np.float32),
            np.array([gain * centre, -gain * centre], np.float32),
        ]
    )
    folder = tmp_path_factory.mktemp("classifier")
    files = ClassifierFiles(folder / "classifier.keras", folder / "classifier_savedmodel")
    with keras_saving():
        model.save(files.keras_file)
        model.export(files.saved_model, verbose=False)
    return files


@pytest.fixture(scope="session")
def channels_first_model(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice model taking (batch, 1, y, x) and giving (batch, 2, y, x): [hu, -hu]."""
    hu = keras.Input(shape=(1, None, None), name="hu")
    last = keras.layers.Permute((2, 3, 1))(hu)
    mapped = keras.layers.Conv2D(2, 1, name="sign")(last)
    first = keras.layers.Permute((3, 1, 2))(mapped)
    model = keras.Model(hu, first)
    model.get_layer("sign").set_weights(
        [np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2), np.zeros(2, np.float32)]
    )
    path = tmp_path_factory.mktemp("channels_first") / "channels_first.keras"
    with keras_saving():
        model.save(path)
    return path
