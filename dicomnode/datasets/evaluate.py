"""``dicomnode evaluate``: run a pipeline over a labelled set and compute its figures.

Each row of the manifest is one series: the pipeline runs on its files exactly as a job
would (the same engine, models and limits), and its answer is set against the row's
label (classification: the probability of one finding) or reference SEG (segmentation:
Dice and volumes per segment). A row that fails is recorded with its reason and left out
of the figures; the run goes on. Subgroup values come from the series' own headers.

Nothing about a patient is logged or kept: items are named by the manifest's ``item``
column (a number in an export) or by their row.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dicomnode.datasets.labelled_set import Columns, LabelledSet, Row, read_labelled_set, row_files
from dicomnode.datasets.metrics import (
    SUBGROUP_KEYS,
    UNKNOWN,
    by_subgroup,
    classification_metrics,
    slice_thickness_band,
    summary,
)
from dicomnode.datasets.seg_compare import compare_segmentations, read_reference_seg
from dicomnode.errors import ConfigError, DicomNodeError
from dicomnode.logs import get_logger
from dicomnode.pipeline.definition import ClassificationOutput, PipelineDefinition
from dicomnode.pipeline.engine import PipelineEngine, RunResult
from dicomnode.pipeline.loading import load_series
from dicomnode.results.provenance import Provenance

log = get_logger(__name__)

DEFAULT_REFERENCE_SEG_COLUMN = "reference_seg"
# What subgroup_values reads: the subgroup keys' own headers, and Modality to tell a
# DICOM image from a stray file.
_HEADERS = (
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "InstitutionName",
    "SliceThickness",
    "Modality",
)


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """What to evaluate, as the command line gives it."""

    pipeline: str
    manifest: Path
    path_column: str = "dicom"
    label_column: str = "label"
    reference_seg_column: str | None = None  # segmentation: default "reference_seg"
    finding: str | None = None  # classification: default the pipeline's first finding
    threshold: float | None = None  # default the finding's threshold in the pipeline
    bootstrap: int = 1000
    seed: int = 0


@dataclass
class ItemResult:
    """One row's outcome; ``error`` set means it is not in the figures."""

    item: str
    label: int | None
    subgroups: dict[str, str] = field(default_factory=dict)
    score: float | None = None
    predicted: int | None = None
    segments: list[dict[str, Any]] | None = None
    error: str | None = None
    seconds: float = 0.0
    files_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "item": self.item,
            "label": self.label,
            "score": self.score,
            "predicted": self.predicted,
            "subgroups": self.subgroups,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }
        if self.segments is not None:
            row["segments"] = self.segments
        return row


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything a report holds, computed."""

    request: EvaluationRequest
    kind: str  # "classification" | "segmentation"
    model: str
    provenance: Provenance
    labelled_set: LabelledSet
    items: tuple[ItemResult, ...]
    finding: str | None
    threshold: float | None
    classification: dict[str, Any] | None
    segmentation: dict[str, Any] | None
    subgroups: dict[str, Any]
    files_sha256: str

    @property
    def evaluated(self) -> int:
        return sum(1 for item in self.items if item.error is None)


def evaluate(
    engine: PipelineEngine, request: EvaluationRequest, *, progress: bool = False
) -> Evaluation:
    """Run ``request.pipeline`` over the manifest's rows and compute the figures.

    ConfigError before any item runs when the pipeline, finding, manifest or a column is
    unknown; a failing item never raises.
    """
    definition = engine.pipelines.get(request.pipeline)
    if definition is None:
        known = ", ".join(sorted(engine.pipelines)) or "none"
        raise ConfigError(f"no pipeline {request.pipeline!r} (pipelines: {known})")
    output = definition.output
    classifying = isinstance(output, ClassificationOutput)
    finding_index, finding, threshold = None, None, None
    if isinstance(output, ClassificationOutput):
        finding_index = _finding_index(output, request.finding, request.pipeline)
        chosen = output.findings[finding_index]
        finding = chosen.finding.meaning
        threshold = request.threshold if request.threshold is not None else chosen.threshold
        if request.reference_seg_column is not None:
            raise ConfigError(
                f"pipeline {request.pipeline!r} classifies: it is judged on the label column,"
                " not on reference SEGs"
            )
        columns = Columns(request.path_column, request.label_column, None)
    else:
        reference = request.reference_seg_column or DEFAULT_REFERENCE_SEG_COLUMN
        columns = Columns(request.path_column, None, reference)
    if request.threshold is not None and not 0.0 <= request.threshold <= 1.0:
        raise ConfigError(f"--threshold {request.threshold}: give a probability within 0..1")
    labelled = read_labelled_set(request.manifest, columns)
    provenance = engine.provenance(request.pipeline, None)
    items = []
    with _progress(progress, len(labelled.rows)) as advance:
        for row in labelled.rows:
            item = _run_item(engine, definition, request.pipeline, row, finding_index, threshold)
            items.append(item)
            log.info("evaluation_item_done", item=item.item, failed=item.error is not None)
            advance()
    done = [i for i in items if i.error is None]
    groups = [i.subgroups for i in done]
    classification = segmentation = None
    if classifying and threshold is not None:
        labels = np.asarray([i.label for i in done], dtype=int)
        scores = np.asarray([i.score for i in done], dtype=np.float64)
        classification = classification_metrics(
            labels, scores, threshold, resamples=request.bootstrap, seed=request.seed
        )
        classification["finding"] = finding
        subgroups = by_subgroup(
            groups,
            lambda index: _subgroup_classification(
                labels[index], scores[index], threshold, request
            ),
        )
    else:
        names = {s.label: s.name for s in getattr(output, "segments", ())}
        segmentation = _segmentation_figures(done, names)
        subgroups = by_subgroup(
            groups, lambda index: _segmentation_figures([done[i] for i in index], names)
        )
    return Evaluation(
        request=request,
        kind="classification" if classifying else "segmentation",
        model=definition.model,
        provenance=provenance,
        labelled_set=labelled,
        items=tuple(items),
        finding=finding,
        threshold=threshold,
        classification=classification,
        segmentation=segmentation,
        subgroups=subgroups,
        files_sha256=_files_digest(items),
    )


def _finding_index(output: ClassificationOutput, wanted: str | None, pipeline: str) -> int:
    if wanted is None:
        return 0
    names = [f.finding.meaning for f in output.findings]
    for index, name in enumerate(names):
        if name.casefold() == wanted.casefold():
            return index
    raise ConfigError(
        f"pipeline {pipeline!r} has no finding {wanted!r} (findings: {', '.join(names)})"
    )


def _run_item(
    engine: PipelineEngine,
    definition: PipelineDefinition,
    pipeline: str,
    row: Row,
    finding_index: int | None,
    threshold: float | None,
) -> ItemResult:
    item = ItemResult(row.item, row.label)
    started = time.perf_counter()
    try:
        files = row_files(row.series_dir) if row.series_dir.is_dir() else []
        if not files:
            raise ConfigError(f"no files in the series folder {row.series_dir.name!r}")
        item.files_sha256 = _digest(files, row.series_dir)
        item.subgroups = subgroup_values(files)
        if finding_index is not None and threshold is not None:
            result = engine.run(pipeline, files)
            item.score = float(result.summary["findings"][finding_index]["probability"])
            item.predicted = int(item.score >= threshold)
        else:
            item.segments = _compare(engine, definition, pipeline, files, row)
    # The root of one item, as a worker loop is of one job: whatever fails is the
    # item's, recorded with its reason, and the run goes on.
    except Exception as exc:  # noqa: BLE001 - recorded in the report, never swallowed
        item.error = _reason(exc)
    item.seconds = time.perf_counter() - started
    return item


def _compare(
    engine: PipelineEngine,
    definition: PipelineDefinition,
    pipeline: str,
    files: Sequence[Path],
    row: Row,
) -> list[dict[str, Any]]:
    if row.reference_seg is None or not row.reference_seg.is_file():
        name = row.reference_seg.name if row.reference_seg is not None else ""
        raise ConfigError(f"no reference SEG file {name!r}")
    reference = read_reference_seg(row.reference_seg)
    result: RunResult = engine.run(pipeline, files)
    predicted = next((d for d in result.datasets if d.get("Modality") == "SEG"), None)
    # The series' frames in z order and each slice's voxel volume, as the engine sees them.
    volume = load_series(files, limits=engine.limits, irregular=True).volume
    depth = volume.shape[0]
    specs = [s.spec() for s in getattr(definition.output, "segments", ())]
    compared = compare_segmentations(
        predicted, reference, specs, volume.refs, volume.geometry.slice_voxel_ml(depth)
    )
    return [c.as_dict() for c in compared]


def _reason(exc: BaseException) -> str:
    kind = "" if isinstance(exc, DicomNodeError) else f"{type(exc).__name__}: "
    return f"{kind}{exc}"[:500]


def subgroup_values(files: Sequence[Path]) -> dict[str, str]:
    """The subgroup keys of a series, from the first of its files that is DICOM."""
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[*_HEADERS])
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "Modality" not in ds:
            continue
        values = {key: _text(ds.get(key)) for key in _HEADERS if key in ds}
        thickness = ds.get("SliceThickness")
        try:
            band = slice_thickness_band(float(thickness) if thickness not in (None, "") else None)
        except (TypeError, ValueError):
            band = UNKNOWN
        values["SliceThicknessBand"] = band
        return {key: values.get(key) or UNKNOWN for key in SUBGROUP_KEYS}
    return dict.fromkeys(SUBGROUP_KEYS, UNKNOWN)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "/".join(str(v).strip() for v in value)
    return str(value).strip()


def _subgroup_classification(
    labels: np.ndarray[Any, Any],
    scores: np.ndarray[Any, Any],
    threshold: float,
    request: EvaluationRequest,
) -> dict[str, Any]:
    figures = classification_metrics(
        labels, scores, threshold, resamples=request.bootstrap, seed=request.seed
    )
    figures.pop("roc", None)
    calibration = figures.pop("calibration", None)
    figures["brier"] = None if calibration is None else calibration["brier"]
    return figures


def _segmentation_figures(items: Sequence[ItemResult], names: Mapping[int, str]) -> dict[str, Any]:
    """Per segment: Dice and volume differences summarised over ``items``."""
    segments = []
    for label, name in sorted(names.items()):
        rows = [s for i in items for s in i.segments or () if s["label"] == label]
        segments.append(
            {
                "label": label,
                "name": name,
                "items": len(rows),
                "dice": summary([r["dice"] for r in rows]),
                "difference_ml": summary([r["difference_ml"] for r in rows]),
                "absolute_difference_ml": summary([abs(r["difference_ml"]) for r in rows]),
                "relative_difference": summary([r["relative_difference"] for r in rows]),
            }
        )
    return {"items": len(items), "segments": segments}


def _digest(files: Sequence[Path], folder: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def _files_digest(items: Sequence[ItemResult]) -> str:
    """One hash of every evaluated file, in manifest order: the data behind the figures."""
    digest = hashlib.sha256()
    for item in items:
        if item.error is None and item.files_sha256 is not None:
            digest.update(f"{item.item}\0{item.files_sha256}\n".encode())
    return digest.hexdigest()


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Any]:
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("evaluating", total=total)
        yield lambda: bar.advance(task)
