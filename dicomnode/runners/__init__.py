"""Model runners: TensorFlow, ONNX and Triton models and Python functions, within limits.

::

    models:
      ct-tissue-reference: {kind: tensorflow, model: "builtin:ct-tissue-reference"}
      ct-onnx: {kind: onnx, model: "builtin:ct-tissue-reference-onnx"}
      ct-remote: {kind: triton, url: "gpu1:8000", model_name: ct-tissue-reference}
      pet-suv-reference:
        kind: python
        function: "dicomnode.models.pet_suv_reference:threshold"
        options: {threshold: 2.5}

``parse_runner_config`` (or a pydantic field typed ``RunnerConfig``) validates one entry,
``ModelHost`` builds, loads and runs them by name (``load`` is what ``config check`` and
start-up call), and ``register`` adds a runner kind. TensorFlow is imported only when a
``tensorflow`` model loads, onnxruntime and tritonclient only when an ``onnx`` or
``triton`` one does: importing this package imports none of them. Every kind accepts
``envelope:`` (:class:`InputEnvelope`), the inputs the model was validated on.
"""

from __future__ import annotations

from dicomnode.runners.abc import InputArray, Prediction, Runner, RunnerParams
from dicomnode.runners.callables import resolve_callable
from dicomnode.runners.config import RunnerConfig, parse_runner_config
from dicomnode.runners.envelope import InputEnvelope
from dicomnode.runners.host import ModelHost
from dicomnode.runners.onnx import OnnxRunner, OnnxRunnerConfig
from dicomnode.runners.python import PythonRunner, PythonRunnerConfig
from dicomnode.runners.registry import RUNNERS, build_runner, register
from dicomnode.runners.tensorflow import TensorFlowRunner, TensorFlowRunnerConfig
from dicomnode.runners.triton import TritonRunner, TritonRunnerConfig

__all__ = [
    "RUNNERS",
    "InputArray",
    "InputEnvelope",
    "ModelHost",
    "OnnxRunner",
    "OnnxRunnerConfig",
    "Prediction",
    "PythonRunner",
    "PythonRunnerConfig",
    "Runner",
    "RunnerConfig",
    "RunnerParams",
    "TensorFlowRunner",
    "TensorFlowRunnerConfig",
    "TritonRunner",
    "TritonRunnerConfig",
    "build_runner",
    "parse_runner_config",
    "register",
    "resolve_callable",
]
