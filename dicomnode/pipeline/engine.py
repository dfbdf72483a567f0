"""Running one pipeline on one series: load, preprocess, infer, restore, measure, write.

The engine is pure work on files and arrays; it knows nothing of the database. The
worker gives it the series' spooled files and stores what it returns. Every stage is
timed, so a job's timeline shows where its seconds went.

A model with an input envelope (:mod:`dicomnode.pipeline.envelope`) has the series'
headers checked inside ``load``, before any pixel is decoded (stage ``envelope``), and its
values after preprocessing (``envelope_values``): outside, the run is refused
(``skip``) or goes on with ``RunResult.envelope`` set and the results' provenance
saying so (``flag``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicomnode.config import PipelineLimits
from dicomnode.errors import OutsideEnvelopeError, PipelineError
from dicomnode.logs import get_logger
from dicomnode.pipeline.definition import (
    ClassificationOutput,
    PipelineDefinition,
    SegmentationOutput,
)
from dicomnode.pipeline.envelope import EnvelopeVerdict
from dicomnode.pipeline.loading import load_series
from dicomnode.pipeline.measure import RegionStats, region_stats
from dicomnode.pipeline.provenance import definition_sha256, model_sha256
from dicomnode.pipeline.steps import build_steps, restore, run_steps
from dicomnode.pipeline.steps.abc import KeepsGrid
from dicomnode.pipeline.tilt import regularize, untilt
from dicomnode.results import tables
from dicomnode.results.content import Finding, Measurement, SegmentMeasurements
from dicomnode.results.labelmap import LabelMap
from dicomnode.results.prior import PriorResult
from dicomnode.results.provenance import Provenance
from dicomnode.results.seg import write_seg
from dicomnode.results.sources import prepare_sources
from dicomnode.results.sr import write_sr
from dicomnode.results.summary_image import write_summary_image
from dicomnode.runners import ModelHost
from dicomnode.volume import Volume

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    seconds: float
    failed: bool = False  # the stage the job failed in (its seconds: until it failed)


@dataclass
class RunResult:
    """What a pipeline produced: result datasets, a summary for people, the timings."""

    datasets: list[Dataset] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    # The series lay outside the model's input envelope: EnvelopeVerdict.as_dict(), for
    # the job's timeline (skipped or flagged); None when inside or when none is declared.
    envelope: dict[str, Any] | None = None


class PipelineEngine:
    """Runs pipeline definitions with the models of one ModelHost."""

    def __init__(
        self,
        pipelines: Mapping[str, PipelineDefinition],
        models: ModelHost,
        limits: PipelineLimits | None = None,
        base_dir: Path | None = None,  # the configuration's folder: steps' relative files
    ) -> None:
        self.base_dir = base_dir
        self.pipelines = pipelines
        self.models = models
        self.limits = limits if limits is not None else PipelineLimits()
        self._hashes: dict[str, tuple[str, str]] = {}  # pipeline: (model, definition)

    def warm_up(self) -> None:
        """Read what the result writers need, if this node is set to run pipelines.

        A model loaded at start means a rule names its pipeline; the first job then
        need not pay for reading highdicom's tables (a second or so). A node that runs
        no pipeline is spared their memory (about 100 MB).
        """
        if self.models.loaded:
            tables.prepare()

    def run(
        self,
        name: str,
        paths: Sequence[Path],
        result: RunResult | None = None,
        replaces: Sequence[PriorResult] = (),
        rules_version: str | None = None,
    ) -> RunResult:
        """Run pipeline ``name`` on a series' files.

        Stages are appended to ``result`` as they end, so a caller that passes its own
        keeps, when the run raises, the stages that ran and the one that failed.
        ``replaces``: the results of this pipeline on an earlier version of the series,
        which the new SR names as its predecessors; ``rules_version``: the rules the
        series was routed under, named in the results' provenance.
        """
        definition = self.pipelines.get(name)
        if definition is None:
            raise PipelineError(f"no pipeline {name!r}")
        result = RunResult() if result is None else result
        steps = build_steps(definition.steps, self.base_dir)
        envelope = self.models.envelope(definition.model)
        verdict = None if envelope is None else EnvelopeVerdict(definition.model, envelope)
        # Checked before any pixel is decoded: a series outside costs only its headers.
        inspect = None if verdict is None else partial(self._check_headers, name, verdict, result)
        with _timed(result, "load"):
            loaded = load_series(paths, limits=self.limits, irregular=True, inspect=inspect)
        source = loaded.volume
        # Unevenly spaced slices stay as acquired where each is processed alone; anything
        # else (a volumetric model, a step that moves the grid) gets them interpolated.
        regularized = None
        as_acquired = self.models.slice_wise(definition.model) and all(
            isinstance(step, KeepsGrid) for step in steps
        )
        if not source.geometry.regular and not as_acquired:
            with _timed(result, "regularize"):
                regularized = regularize(source)
        with _timed(result, "preprocess"):
            model_source = source if regularized is None else regularized.volume
            prepared, trace = run_steps(model_source, steps)
        # A volumetric model gets a tilted (sheared) stack made regular, as dcm2niix does.
        untilted = None
        if prepared.geometry.sheared and not self.models.slice_wise(definition.model):
            with _timed(result, "untilt"):
                untilted = untilt(prepared)
        if verdict is not None and verdict.envelope.values is not None:
            with _timed(result, "envelope_values"), self._noting(name, verdict, result):
                verdict.check_values(source, prepared)
        if verdict is not None and verdict.outside:  # flagged: it runs, and says so
            self._outside(name, verdict, result)
        with _timed(result, "inference"):
            context = {"pipeline": name, "series_uid": source.series_instance_uid}
            model_input = prepared if untilted is None else untilted.volume
            prediction = self.models.predict(definition.model, model_input.array, context)
        provenance = self._provenance(name, definition, rules_version)
        if verdict is not None and verdict.outside:
            provenance = replace(provenance, input_envelope="; ".join(verdict.reasons))
        output = definition.output
        if isinstance(output, ClassificationOutput):
            findings = _findings(output, prediction)
            with _timed(result, "sr"):
                result.datasets.append(
                    write_sr(
                        loaded.sources, None, None, (), definition.algorithm.info(),
                        series_number=definition.series_number + 1, findings=findings,
                        refs=source.refs, replaces=replaces, provenance=provenance,
                    )
                )  # fmt: skip
            if definition.summary_image:
                with _timed(result, "summary"):
                    result.datasets.append(
                        write_summary_image(
                            loaded.sources, definition.algorithm.info(),
                            series_number=definition.series_number + 2, findings=findings,
                            provenance=provenance, reference=definition.reference,
                        )
                    )  # fmt: skip
            result.summary = {
                "findings": [
                    {
                        "finding": f.finding.meaning,
                        "probability": f.probability,
                        "present": bool(f.present),
                    }
                    for f in findings
                ]
            }
            _flag(result)
            return result
        with _timed(result, "restore"):
            labels = _labels(output, prediction)
            if untilted is not None:
                labels = untilted.labels_back(labels)
            labels = restore(labels, trace)
            if regularized is not None:
                labels = regularized.labels_back(labels)
        values = _measured_volume(output, source, prepared)
        specs = [segment.spec() for segment in output.segments]
        with _timed(result, "measure"):
            stats = region_stats(
                labels,
                values.array,
                [s.label for s in specs],
                source.geometry.slice_voxel_ml(source.shape[0]),
            )
            measurements = [_measurements(s, values.units) for s in stats]
        with _timed(result, "seg"):
            # Checked, counted and aligned once, for the SEG and the SR alike.
            label_map = LabelMap.of(labels, specs)
            sources = prepare_sources(loaded.sources, label_map.depth, source.refs)
            seg = write_seg(
                sources, label_map, specs, definition.algorithm.info(),
                series_number=definition.series_number, provenance=provenance,
            )  # fmt: skip
        with _timed(result, "sr"):
            sr = write_sr(
                sources, seg, label_map, specs, definition.algorithm.info(),
                series_number=definition.series_number + 1, measurements=measurements,
                replaces=replaces, provenance=provenance,
            )  # fmt: skip
        result.datasets.extend(d for d in (seg, sr) if d is not None)
        if definition.summary_image:
            # A requested result: failing to make it fails the job, as a SEG or SR would.
            with _timed(result, "summary"):
                result.datasets.append(
                    write_summary_image(
                        sources, definition.algorithm.info(),
                        series_number=definition.series_number + 2, labels=label_map,
                        values=values.array, units=values.units, segments=specs,
                        measurements=measurements, provenance=provenance,
                        reference=definition.reference,
                    )
                )  # fmt: skip
        names = {s.label: s.name for s in specs}
        result.summary = {
            "units": values.units,
            "regions": [
                {
                    "label": s.label,
                    "name": names[s.label],
                    "volume_ml": round(s.volume_ml, 3),
                    "mean": round(s.mean, 4),
                    "max": round(s.maximum, 4),
                }
                for s in stats
            ],
        }
        _flag(result)
        return result

    def provenance(self, name: str, rules_version: str | None) -> Provenance:
        """What pipeline ``name``'s results name as their provenance (hashes cached)."""
        definition = self.pipelines.get(name)
        if definition is None:
            raise PipelineError(f"no pipeline {name!r}")
        return self._provenance(name, definition, rules_version)

    def _check_headers(
        self,
        pipeline: str,
        verdict: EnvelopeVerdict,
        result: RunResult,
        headers: Sequence[Dataset],
    ) -> None:
        with _timed(result, "envelope"), self._noting(pipeline, verdict, result):
            verdict.check_headers(headers)

    @contextmanager
    def _noting(self, pipeline: str, verdict: EnvelopeVerdict, result: RunResult) -> Iterator[None]:
        """Record and log a series the check refuses (``skip``)."""
        try:
            yield
        except OutsideEnvelopeError:
            self._outside(pipeline, verdict, result)
            raise

    @staticmethod
    def _outside(pipeline: str, verdict: EnvelopeVerdict, result: RunResult) -> None:
        result.envelope = verdict.as_dict()
        scanner = verdict.scanner
        log.warning(
            "envelope_outside",
            model=verdict.model,
            pipeline=pipeline,
            action=verdict.envelope.on_outside,
            reasons=list(verdict.reasons),
            manufacturer=scanner.manufacturer,
            scanner_model=scanner.model,
            station=scanner.station,
        )

    def _provenance(
        self, name: str, definition: PipelineDefinition, rules_version: str | None
    ) -> Provenance:
        hashes = self._hashes.get(name)
        if hashes is None:
            model = model_sha256(self.models.runner(definition.model))
            hashes = self._hashes[name] = (model, definition_sha256(definition))
        return Provenance(hashes[0], hashes[1], rules_version)


@contextmanager
def _timed(result: RunResult, stage: str) -> Iterator[None]:
    """Time a stage; a failure is the innermost stage's (``envelope`` within ``load``)."""
    started = time.perf_counter()
    before = len(result.stages)
    try:
        yield
    except BaseException:
        inner = any(s.failed for s in result.stages[before:])
        result.stages.append(
            Stage(stage, round(time.perf_counter() - started, 4), failed=not inner)
        )
        raise
    result.stages.append(Stage(stage, round(time.perf_counter() - started, 4)))


def _flag(result: RunResult) -> None:
    """A flagged run's summary says it ran outside the model's input envelope."""
    if result.envelope is not None:
        result.summary["envelope"] = {
            "model": result.envelope["model"],
            "outside": result.envelope["outside"],
        }


def _labels(output: SegmentationOutput, prediction: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A label map on the model's grid from whatever form the model answered in."""
    if prediction.ndim == 4 and prediction.shape[-1] > 1:
        dtype = np.uint8 if prediction.shape[-1] <= 256 else np.uint16
        labels: npt.NDArray[Any] = np.argmax(prediction, axis=-1).astype(dtype)
        return labels
    if prediction.ndim == 4:
        prediction = prediction[..., 0]
    if prediction.ndim != 3:
        raise PipelineError(f"a segmentation model must answer per voxel, got {prediction.shape}")
    if prediction.dtype in (np.uint8, np.uint16):
        # Labels already (a runner's ``output_labels``): taken as they are. A copy of a
        # 300-slice 512x512 map costs 0.2 s, and a wider one slows every later count.
        return prediction
    if prediction.dtype == np.bool_:
        return prediction.view(np.uint8)
    if np.issubdtype(prediction.dtype, np.integer):
        return prediction.astype(np.uint16)
    return (prediction >= output.threshold).astype(np.uint8)


def _measured_volume(output: SegmentationOutput, source: Volume, prepared: Volume) -> Volume:
    if output.measure_on == "source":
        return source
    if prepared.array.shape != source.array.shape:
        raise PipelineError(
            "measure_on: preprocessed needs the preprocessed volume on the source grid; "
            f"it is {prepared.array.shape}, the source {source.array.shape}"
        )
    return prepared


def _measurements(stats: RegionStats, units: str) -> SegmentMeasurements:
    if units == "HU":
        values = [
            Measurement.volume_ml(stats.volume_ml),
            Measurement.mean_hu(stats.mean),
            Measurement.max_hu(stats.maximum),
        ]
    elif units.startswith("SUV"):
        values = [
            Measurement.suv_max(stats.maximum),
            Measurement.suv_mean(stats.mean),
            Measurement.metabolic_volume_ml(stats.volume_ml),
            Measurement.total_lesion_glycolysis(stats.total_lesion_glycolysis),
        ]
    else:
        values = [Measurement.volume_ml(stats.volume_ml)]
    return SegmentMeasurements(stats.label, values)


def _findings(output: ClassificationOutput, prediction: npt.NDArray[Any]) -> list[Finding]:
    probabilities = np.asarray(prediction, dtype=np.float64).ravel()
    findings = []
    for item in output.findings:
        if item.index >= probabilities.size:
            raise PipelineError(
                f"finding index {item.index} but the model gave {probabilities.size} outputs"
            )
        findings.append(
            Finding(item.finding.code(), float(probabilities[item.index]), item.threshold)
        )
    return findings
