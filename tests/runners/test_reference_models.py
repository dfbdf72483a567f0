"""The built-in reference models: the shipped file is the one the script builds."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicomnode.models import BUILTIN_MODELS, builtin_model
from dicomnode.models import ct_tissue_reference as design
from dicomnode.models.pet_suv_reference import threshold

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_ct_model_matches_its_recorded_digest() -> None:
    model = BUILTIN_MODELS["ct-tissue-reference"]
    data = model.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == model.sha256
    assert len(data) < 64 * 1024
    readme = (model.path.parent / "README.md").read_text()
    assert model.sha256 in readme
    assert "REFERENCE" in readme


def test_the_shipped_onnx_model_matches_its_recorded_digest() -> None:
    model = BUILTIN_MODELS["ct-tissue-reference-onnx"]
    data = model.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == model.sha256
    assert len(data) < 16 * 1024
    assert model.sha256 in (model.path.parent / "README.md").read_text()


def test_an_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no built-in model 'ct'; built-in models: ct-tissue"):
        builtin_model("ct")


def test_the_design_puts_each_integer_hu_in_its_range() -> None:
    hu = np.arange(-1100, 3101)
    assert np.array_equal(design.probabilities(hu).argmax(axis=-1), design.true_labels(hu))
    assert design.probabilities(hu).max(axis=-1).min() > 0.999


def test_the_pet_threshold_is_inclusive() -> None:
    suv = np.array([[[2.4999, 2.5, 2.5001]]], np.float32)
    assert threshold(suv).tolist() == [[[0, 1, 1]]]
    assert threshold(suv, threshold=3.0).tolist() == [[[0, 0, 0]]]
    with pytest.raises(ValueError, match="expects one SUV volume"):
        threshold(np.zeros((2, 2), np.float32))


@pytest.mark.slow
def test_the_build_script_rebuilds_the_shipped_file_byte_for_byte() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_reference_models.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert BUILTIN_MODELS["ct-tissue-reference"].sha256 in result.stdout


@pytest.mark.slow
def test_the_onnx_script_converts_the_keras_file_to_the_shipped_onnx_file_byte_for_byte() -> None:
    pytest.importorskip("tf2onnx", reason="tf2onnx (a test extra) is not installed")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_onnx_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert BUILTIN_MODELS["ct-tissue-reference-onnx"].sha256 in result.stdout
