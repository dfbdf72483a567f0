"""The evaluation report: ``report.json`` (the record) and ``report.html`` (for people).

The JSON is the one that counts: it names the model and pipeline by their SHA-256 (what
every result of the node names in its provenance) and the data by the manifest's and the
files' SHA-256, so a report can be tied to what ran and what it ran on. A report is named
elsewhere by the SHA-256 of its ``report.json`` bytes (:func:`read_report` adds it), for
instance by the shadow-mode rule an administrator ended on its strength. The HTML page,
``roc.png`` and ``calibration.png`` sit beside it; the page embeds its images, so it can be
mailed on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from dicomnode import __version__
from dicomnode.datasets.evaluate import Evaluation
from dicomnode.datasets.evaluation_figures import calibration_png, roc_png
from dicomnode.datasets.evaluation_html import report_html
from dicomnode.errors import ConfigError

KIND: Final = "dicomnode-evaluation"
VERSION: Final = 1
JSON_NAME: Final = "report.json"
HTML_NAME: Final = "report.html"
ROC_NAME: Final = "roc.png"
CALIBRATION_NAME: Final = "calibration.png"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    json: Path
    html: Path
    figures: tuple[Path, ...]
    sha256: str  # of report.json's bytes


def report_dict(evaluation: Evaluation, created: datetime | None = None) -> dict[str, Any]:
    """The report as JSON-ready data (format: docs/evaluation.md)."""
    request = evaluation.request
    labelled = evaluation.labelled_set
    moment = (created or datetime.now(UTC)).astimezone(UTC)
    failed = sum(1 for item in evaluation.items if item.error is not None)
    figures = {}
    if evaluation.classification is not None:
        figures = {"roc": ROC_NAME, "calibration": CALIBRATION_NAME}
    return {
        "kind": KIND,
        "version": VERSION,
        "created": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "dicomnode_version": __version__,
        "pipeline": request.pipeline,
        "task": evaluation.kind,
        "model": evaluation.model,
        "model_sha256": evaluation.provenance.model_sha256,
        "pipeline_sha256": evaluation.provenance.pipeline_sha256,
        "dataset": {
            "manifest": str(request.manifest),
            "manifest_sha256": labelled.sha256,
            "items": len(evaluation.items),
            "evaluated": evaluation.evaluated,
            "failed": failed,
            "skipped_unlabelled": labelled.skipped,
            "files_sha256": evaluation.files_sha256,
        },
        "options": {
            "finding": evaluation.finding,
            "threshold": evaluation.threshold,
            "threshold_source": "command line" if request.threshold is not None else "pipeline",
            "bootstrap": request.bootstrap,
            "seed": request.seed,
            "path_column": request.path_column,
            "label_column": request.label_column if evaluation.kind == "classification" else None,
            "reference_seg_column": None
            if evaluation.kind == "classification"
            else (request.reference_seg_column or "reference_seg"),
        },
        "classification": evaluation.classification,
        "segmentation": evaluation.segmentation,
        "subgroups": evaluation.subgroups,
        "figures": figures,
        "items": [item.as_dict() for item in evaluation.items],
    }


def write_report(evaluation: Evaluation, out_dir: Path) -> ReportFiles:
    """Write report.json, report.html and (classification) roc.png and calibration.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(evaluation)
    pictures: dict[str, bytes] = {}
    if evaluation.classification is not None:
        title = f"{evaluation.request.pipeline}: {evaluation.finding}"
        pictures[ROC_NAME] = roc_png(evaluation.classification, title)
        pictures[CALIBRATION_NAME] = calibration_png(evaluation.classification, title)
    figures = []
    for name, data in pictures.items():
        _write_atomically(out_dir / name, data)
        figures.append(out_dir / name)
    # allow_nan=False: a NaN would make the file unreadable to strict JSON readers.
    data = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
    json_path = out_dir / JSON_NAME
    _write_atomically(json_path, data + b"\n")
    sha256 = hashlib.sha256(data + b"\n").hexdigest()
    html_path = out_dir / HTML_NAME
    _write_atomically(html_path, report_html(report, pictures, sha256).encode("utf-8"))
    return ReportFiles(json_path, html_path, tuple(figures), sha256)


def read_report(path: Path) -> dict[str, Any]:
    """A report.json, checked to be an evaluation report of a known version, with
    ``report_sha256`` (of its bytes) added. ConfigError names the file and the problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the report: {exc.strerror}") from exc
    return parse_report(data, str(path))


def parse_report(data: bytes, name: str) -> dict[str, Any]:
    """:func:`read_report` on a report's bytes (sent to the admin API, say); ``name``
    names it in the ConfigError."""
    try:
        report = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{name}: not a JSON report: {exc}") from exc
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise ConfigError(f"{name}: not an evaluation report (kind must be {KIND!r})")
    if report.get("version") != VERSION:
        raise ConfigError(
            f"{name}: evaluation report version {report.get('version')!r}; "
            f"this dicomnode reads version {VERSION}"
        )
    for key in ("pipeline", "model_sha256", "pipeline_sha256", "created"):
        if not isinstance(report.get(key), str):
            raise ConfigError(f"{name}: the report lacks {key!r}")
    report["report_sha256"] = hashlib.sha256(data).hexdigest()
    return report


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside, then rename: a reader never sees half a report."""
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    partial.replace(path)
