"""Pipeline definitions: steps, a model, how to read its output, and what to report.

::

    pipelines:
      my-liver:
        steps: [{kind: hu}, {kind: resize, rows: 256, columns: 256}]
        model: liver-unet                  # a name from `models:`
        output:
          kind: segmentation
          segments:
            - {label: 1, name: Liver, category: {value: "91723000", meaning: Anatomical Structure},
               type: {value: "10200004", meaning: Liver}}
        algorithm: {name: liver-unet, version: "2.1"}

The built-in reference pipelines (``dicomnode/models/reference.yaml``) are defined the
same way. Validation errors name the pipeline and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from dicomnode.errors import ConfigError
from dicomnode.pipeline.steps import StepList, build_steps
from dicomnode.results.codes import Code
from dicomnode.results.content import AlgorithmInfo, SegmentSpec
from dicomnode.runners import RunnerConfig


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CodeConfig(_Frozen):
    """A coded concept; the scheme defaults to SNOMED CT."""

    value: str
    scheme: str = "SCT"
    meaning: str

    def code(self) -> Code:
        return Code(self.value, self.scheme, self.meaning)


class SegmentConfig(_Frozen):
    label: Annotated[int, Field(ge=1, le=65535)]
    name: str
    category: CodeConfig
    type: CodeConfig
    color: tuple[int, int, int] | None = None

    def spec(self) -> SegmentSpec:
        return SegmentSpec(
            label=self.label,
            name=self.name,
            category=self.category.code(),
            type=self.type.code(),
            color=self.color,
        )


class SegmentationOutput(_Frozen):
    """The model outputs a label map, or per-class probabilities (argmax), per voxel."""

    kind: Literal["segmentation"]
    segments: Annotated[tuple[SegmentConfig, ...], Field(min_length=1)]
    # For a single-channel probability output: voxels at or above are label 1.
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # Measure on the loaded series (HU, Bq/ml) or on the preprocessed volume (e.g. SUV),
    # which must then still be on the source grid.
    measure_on: Literal["source", "preprocessed"] = "source"


class FindingConfig(_Frozen):
    index: Annotated[int, Field(ge=0)]  # which output probability
    finding: CodeConfig
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5


class ClassificationOutput(_Frozen):
    """The model outputs one vector of class probabilities for the series."""

    kind: Literal["classification"]
    findings: Annotated[tuple[FindingConfig, ...], Field(min_length=1)]


Output = Annotated[SegmentationOutput | ClassificationOutput, Field(discriminator="kind")]


class AlgorithmConfig(_Frozen):
    name: str
    version: str
    source: str | None = None

    def info(self) -> AlgorithmInfo:
        return AlgorithmInfo(name=self.name, version=self.version, source=self.source)


class PipelineDefinition(_Frozen):
    description: str = ""
    reference: bool = False  # a reference pipeline: demonstrates the node, not clinical
    steps: StepList = ()
    model: str
    output: Output
    algorithm: AlgorithmConfig
    series_number: Annotated[int, Field(ge=1)] = 9000  # SEG gets it, SR gets it + 1
    # A job that fails for good sends an "AI not run" SR (series_number + 1) where its
    # results would have gone (dicomnode.results.not_run).
    report_not_run: bool = False
    # A Secondary Capture (series_number + 2) with the regions' outlines and the values
    # burned in, for viewers that render neither SEG nor SR (dicomnode.results.summary_image).
    summary_image: bool = False
    # Shadow mode (docs/shadow.md): every job of this pipeline keeps its results and
    # sends nothing, whatever its rule's send_to says.
    shadow: bool = False


# A pipeline's name is kept in the index with each job, in a column of 64 characters
# (PostgreSQL refuses longer text there; SQLite would keep it).
PipelineName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
_PIPELINES = TypeAdapter(dict[PipelineName, PipelineDefinition])
_MODELS = TypeAdapter(dict[str, RunnerConfig])


def parse_pipelines(raw: Mapping[str, Any], where: str) -> dict[str, PipelineDefinition]:
    """Validate ``pipelines:``; ConfigError lists ``where: pipelines.NAME.key: problem``."""
    try:
        return _PIPELINES.validate_python(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, "pipelines")) from None


def parse_models(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate ``models:`` (each a runner configuration with a ``kind``)."""
    try:
        return _MODELS.validate_python(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, "models")) from None


def _describe(exc: ValidationError, where: str, section: str) -> str:
    lines = []
    for error in exc.errors():
        parts = [str(p) for p in error["loc"] if not _is_tag(p)]
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{where}: {'.'.join([section, *parts])}: {message}")
    return "\n".join(lines)


def _is_tag(part: str | int) -> bool:
    """Pydantic puts union tags and validator names into locations."""
    return isinstance(part, str) and (
        part in {"segmentation", "classification", "tensorflow", "onnx", "triton", "python"}
        or "[" in part
        or part.startswith("function-")
    )


def reference_definitions() -> tuple[dict[str, Any], dict[str, PipelineDefinition]]:
    """The built-in reference models and pipelines (``dicomnode/models/reference.yaml``)."""
    text = resources.files("dicomnode.models").joinpath("reference.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    where = "dicomnode/models/reference.yaml"
    return parse_models(data["models"], where), parse_pipelines(data["pipelines"], where)


def all_definitions(
    models: Mapping[str, Any], pipelines: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, PipelineDefinition]]:
    """Reference definitions plus the configuration's; a name may not be taken twice."""
    ref_models, ref_pipelines = reference_definitions()
    own_models, own_pipelines = parse_models(models, where), parse_pipelines(pipelines, where)
    clashes = sorted(
        (ref_models.keys() & own_models.keys()) | (ref_pipelines.keys() & own_pipelines.keys())
    )
    if clashes:
        raise ConfigError(f"{where}: {', '.join(clashes)}: names taken by built-in references")
    every_model = {**ref_models, **own_models}
    every_pipeline = {**ref_pipelines, **own_pipelines}
    known = ", ".join(sorted(every_model))
    missing = [
        f"{where}: pipelines.{name}.model: no model {p.model!r} (models: {known})"
        for name, p in every_pipeline.items()
        if p.model not in every_model
    ]
    if missing:
        raise ConfigError("\n".join(missing))
    return every_model, every_pipeline


def check_step_files(
    pipelines: Mapping[str, PipelineDefinition], base_dir: Path, where: str
) -> None:
    """Build every pipeline's steps once, so a step's missing or unreadable file (a
    ``register`` template) fails the configuration check, not the first study."""
    problems = []
    for name, definition in pipelines.items():
        try:
            build_steps(definition.steps, base_dir)
        except ConfigError as exc:
            problems.append(f"{where}: pipelines.{name}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
