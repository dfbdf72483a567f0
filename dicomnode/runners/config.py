"""The runner kinds a pipeline's YAML may name: a union discriminated by ``kind``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from dicomnode.errors import ConfigError
from dicomnode.runners.onnx import OnnxRunnerConfig
from dicomnode.runners.python import PythonRunnerConfig
from dicomnode.runners.tensorflow import TensorFlowRunnerConfig
from dicomnode.runners.triton import TritonRunnerConfig

_Kinds = TensorFlowRunnerConfig | OnnxRunnerConfig | TritonRunnerConfig | PythonRunnerConfig
RunnerConfig = Annotated[_Kinds, Field(discriminator="kind")]

_ADAPTER: TypeAdapter[_Kinds] = TypeAdapter(RunnerConfig)


def parse_runner_config(data: Any, where: str = "runner") -> RunnerConfig:
    """One runner's configuration; ConfigError names ``where`` and each bad key."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        kind = data.get("kind") if isinstance(data, dict) else None
        problems = "; ".join(
            f"{_key(error['loc'], kind)}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def _key(location: tuple[int | str, ...], kind: object) -> str:
    """The key path of an error, without the union's tag pydantic puts first."""
    if location and location[0] == kind:
        location = location[1:]
    return ".".join(str(part) for part in location) or "kind"
