"""The hashes a result's provenance names: the model's file and the pipeline's definition.

Both are computed once per engine (a model file may be a gigabyte) and name what this
process loaded: a model file replaced on disk is only loaded again at restart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from dicomnode.pipeline.definition import PipelineDefinition
from dicomnode.runners.abc import Runner
from dicomnode.runners.onnx import OnnxRunner
from dicomnode.runners.python import PythonRunner
from dicomnode.runners.tensorflow import TensorFlowRunner

UNKNOWN = "unknown"
_CHUNK = 1 << 20


def definition_sha256(definition: PipelineDefinition) -> str:
    """SHA-256 of the definition as normalised JSON (defaults filled, keys sorted).

    ``shadow`` is left out: it says where results go, not how they are made, so a model
    evaluated in shadow keeps its hash when it goes live.
    """
    dumped = definition.model_dump(mode="json", exclude={"shadow"})
    text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_sha256(runner: Runner) -> str:
    """SHA-256 of the model's file: a TensorFlow model's file or folder, an ONNX file, a
    Python model's module; ``unknown`` for a runner whose model is not a file here (Triton)."""
    path: Path | None = None
    if isinstance(runner, TensorFlowRunner | OnnxRunner):
        path = runner.path
    elif isinstance(runner, PythonRunner):
        module = runner.params.function.partition(":")[0]
        spec = importlib.util.find_spec(module)
        path = Path(spec.origin) if spec is not None and spec.origin else None
    if path is None or not path.exists():
        return UNKNOWN
    return _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
