"""The built-in reference models: small, documented, reproducible, and not clinical.

They exist so that a fresh node has something real to run (``dicomnode demo``, the
built-in reference pipelines, the tests). ``README.md`` beside this file says how each was
built and what it does; ``scripts/build_reference_models.py`` rebuilds the model files
byte for byte. A runner config names a built-in model file as ``builtin:NAME``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model file shipped inside this package."""

    name: str
    filename: str
    # The shipped file's digest; the build script prints it and a test compares them.
    sha256: str
    description: str

    @property
    def path(self) -> Path:
        # setuptools installs packages as folders, so package data are plain files.
        return Path(__file__).resolve().parent / self.filename


BUILTIN_MODELS: Mapping[str, BuiltinModel] = MappingProxyType(
    {
        "ct-tissue-reference": BuiltinModel(
            name="ct-tissue-reference",
            filename="ct_tissue_reference.keras",
            sha256="a8eb1bdd37e13b0c8fd29851594033a87a6d8016643431a9af17dc32f2efdc14",
            description=(
                "REFERENCE model, not clinical: per-pixel background/fat/soft tissue/bone "
                "probabilities from fixed HU thresholds"
            ),
        ),
        "ct-tissue-reference-onnx": BuiltinModel(
            name="ct-tissue-reference-onnx",
            filename="ct_tissue_reference.onnx",
            sha256="8b12fc1bf69b14c97ff0674b9b344a0b597ed392e79342618c41559c5bd72bd8",
            description=(
                "REFERENCE model, not clinical: ct-tissue-reference converted to ONNX by "
                "tf2onnx (scripts/build_onnx_reference.py), for the onnx runner"
            ),
        ),
    }
)


def builtin_model(name: str) -> BuiltinModel:
    """The built-in model called ``name``; the ``ValueError`` names the ones that exist."""
    model = BUILTIN_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ValueError(f"no built-in model {name!r}; built-in models: {known}")
    return model


__all__ = ["BUILTIN_MODELS", "BUILTIN_PREFIX", "BuiltinModel", "builtin_model"]
