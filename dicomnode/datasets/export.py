"""``dicomnode export``: selected series as a de-identified training set, with a manifest.

Each series becomes one item folder (``item-0001/``) holding what was asked for: the
de-identified DICOM files (``dicom/0001.dcm``...), a NIfTI volume (``image.nii.gz``, 4-D
for a dynamic PET series) and 8-bit slices (``images/``), the volume preprocessed by the
same YAML steps a pipeline runs, so that training data is what the model sees in
production. ``manifest.csv`` gets one row per item, appended as the item is finished.

Resumable: an item is written under ``item-NNNN.part`` and renamed when whole, then its
manifest row is appended and synced; a run that stops leaves at most one ``.part``
folder, which the next run removes. The next run with the same settings skips the series
already in the manifest. Pseudonyms come from a key kept in ``.export/key`` while the
export may continue; once every item is exported the key is deleted (unless asked to keep
it), so nobody holding the folder can recompute a pseudonym from a patient's ID.

No file name is built from a UID or any received value: items and files are numbered.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicomnode.config import PipelineLimits
from dicomnode.datasets.deid import Deidentifier, DeidOptions, new_key
from dicomnode.datasets.select import SeriesSource
from dicomnode.errors import ConfigError
from dicomnode.logs import get_logger
from dicomnode.pipeline.steps import StepConfig, build_steps, run_steps
from dicomnode.volume import Volume

log = get_logger(__name__)

VOLUME_FORMATS = ("nifti", "png", "jpeg", "gif")
FORMATS = ("dicom", *VOLUME_FORMATS)
IMAGE_FORMATS = ("png", "jpeg", "gif")
MANIFEST_COLUMNS = (
    "item",
    "patient",
    "study",
    "series",
    "modality",
    "instances",
    "dicom",
    "nifti",
    "images",
    "steps",
    "steps_sha256",
    "label",
)
_STATE = ".export"


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to write, and how: the settings a resumed export must repeat."""

    out: Path
    formats: frozenset[str]
    steps: tuple[StepConfig, ...] = ()
    steps_name: str = ""  # ``pipeline:NAME`` or the steps file's name
    steps_base: Path | None = None  # what relative paths in steps are relative to
    deid: DeidOptions = field(default_factory=DeidOptions)
    mapping: Path | None = None  # where to keep the pseudonym mapping (only if asked)
    keep_key: bool = False
    limits: PipelineLimits = field(default_factory=PipelineLimits)

    def __post_init__(self) -> None:
        unknown = sorted(self.formats - set(FORMATS))
        if unknown or not self.formats:
            raise ConfigError(
                f"--to: {', '.join(unknown) or 'nothing'}: choose from {', '.join(FORMATS)}"
            )
        if self.formats & set(IMAGE_FORMATS):
            check_image_steps(self.steps)

    @property
    def steps_sha256(self) -> str:
        return steps_sha256(self.steps)

    def settings(self) -> dict[str, Any]:
        """What must match between the runs of one export."""
        return {
            "formats": sorted(self.formats),
            "steps": self.steps_name,
            "steps_sha256": self.steps_sha256,
            "retain_longitudinal": self.deid.retain_longitudinal,
            "clean_descriptors": self.deid.clean_descriptors,
        }


@dataclass
class ExportOutcome:
    exported: int = 0
    skipped: int = 0  # already in the manifest
    failed: list[tuple[str, str]] = field(default_factory=list)  # (series label, reason)


def steps_sha256(steps: Sequence[StepConfig]) -> str:
    """A hash of the step list as validated (defaults filled), stable across runs."""
    text = json.dumps([s.model_dump(mode="json") for s in steps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_image_steps(steps: Sequence[StepConfig]) -> None:
    """8-bit images need values in 0..1: the last step that sets values must make them so.

    A ``window`` step with ``output: unit`` or a ``normalize`` minmax step to 0..1 does;
    steps that only move the grid after it (resize, resample, crop_pad) keep the range.
    """
    grid_only = {"resize", "resample", "crop_pad", "register"}
    for step in reversed(steps):
        if step.kind in grid_only:
            continue
        params = step.model_dump()
        if step.kind == "window" and params.get("output") == "unit":
            return
        unit_range = params.get("range") in (None, (0.0, 1.0), [0.0, 1.0])
        if step.kind == "normalize" and params.get("method") == "minmax" and unit_range:
            return
        break
    raise ConfigError(
        "--to png/jpeg/gif: 8-bit images map values 0..1 to 0..255, so the steps must end "
        "with {kind: window, center: C, width: W, output: unit} or {kind: normalize, "
        "method: minmax} (grid steps such as resize may follow)"
    )


class Export:
    """One export folder: its key, its manifest, its items."""

    def __init__(self, request: ExportRequest) -> None:
        self.request = request
        self.out = request.out
        self._state = self.out / _STATE
        self._manifest = self.out / "manifest.csv"
        self._done: set[str] = set()
        self._next_item = 1
        self._deid: Deidentifier | None = None
        self._steps = build_steps(request.steps, request.steps_base)

    def open(self) -> None:
        """Create or resume the folder: check its settings, load the key and the manifest."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._state.mkdir(mode=0o700, exist_ok=True)
        settings_file = self._state / "settings.json"
        settings = self.request.settings()
        if settings_file.exists():
            earlier = json.loads(settings_file.read_text("utf-8"))
            if earlier != settings:
                changed = sorted(k for k in settings if earlier.get(k) != settings[k])
                raise ConfigError(
                    f"{self.out}: holds an export made with other settings "
                    f"({', '.join(changed)}); continue it with the same options or export "
                    "to another folder"
                )
        key_file = self._state / "key"
        rows = self._read_manifest()
        if key_file.exists():
            key = bytes.fromhex(key_file.read_text("ascii").strip())
        elif rows:
            raise ConfigError(
                f"{self.out}: this export is finished and its key was deleted, so new items "
                "would get other pseudonyms; export to another folder (--keep-key keeps the "
                "key for exports that grow)"
            )
        else:
            key = new_key()
            _write_private(key_file, key.hex())
        _write_atomic(settings_file, json.dumps(settings, indent=2))
        self._deid = Deidentifier(self.request.deid, key)
        self._done = {row["series"] for row in rows}
        numbers = [int(row["item"]) for row in rows if row.get("item", "").isdigit()]
        self._next_item = max(numbers, default=0) + 1
        for stale in self.out.glob("item-*.part"):
            shutil.rmtree(stale)  # an item a stopped run did not finish

    def run(
        self, series: Sequence[SeriesSource], advance: Callable[[], None] | None = None
    ) -> ExportOutcome:
        """Export each series; a failure is that item's, the others go on."""
        outcome = ExportOutcome()
        for position, source in enumerate(series, start=1):
            try:
                if self._export_one(source):
                    outcome.exported += 1
                else:
                    outcome.skipped += 1
            except Exception as exc:  # noqa: BLE001 - one series' failure is its own
                reason = _reason(exc)
                outcome.failed.append((source.label, reason))
                # The position and the error's type only: a folder's name, which the
                # reason may quote, can carry a patient's name. The console gets it whole.
                log.warning("export_item_failed", position=position, error=type(exc).__name__)
            if advance is not None:
                advance()
        self._finish(outcome)
        return outcome

    # -- one item -----------------------------------------------------------------------

    def _export_one(self, source: SeriesSource) -> bool:
        deid = self._deidentifier()
        first = _read(source.paths[0], pixels=False)
        series_pseudonym = deid.remap_uid(source.series_uid)
        if series_pseudonym in self._done:
            return False
        number = self._next_item
        name = f"item-{number:04d}"
        part = self.out / f"{name}.part"
        if part.exists():
            shutil.rmtree(part)
        part.mkdir()
        row = {
            "item": f"{number:04d}",
            "patient": deid.patient_pseudonym(first),
            "study": deid.remap_uid(str(first.get("StudyInstanceUID", ""))),
            "series": series_pseudonym,
            "modality": str(first.get("Modality", "")),
            "instances": str(len(source.paths)),
            "dicom": "",
            "nifti": "",
            "images": "",
            "steps": self.request.steps_name,
            "steps_sha256": self.request.steps_sha256 if self.request.steps else "",
            "label": "",
        }
        formats = self.request.formats
        if "dicom" in formats:
            self._write_dicom(source, part / "dicom")
            row["dicom"] = f"{name}/dicom"
        if formats & set(VOLUME_FORMATS):
            volumes, timing = self._volumes(source, first)
            if "nifti" in formats:
                self._write_nifti(volumes, timing, part / "image.nii.gz")
                row["nifti"] = f"{name}/image.nii.gz"
            images = sorted(formats & set(IMAGE_FORMATS))
            if images:
                self._write_images(volumes, images, part / "images")
                row["images"] = f"{name}/images"
        _sync_tree(part)
        part.rename(self.out / name)
        _fsync_dir(self.out)
        self._append_row(row)
        self._done.add(series_pseudonym)
        self._next_item += 1
        return True

    def _write_dicom(self, source: SeriesSource, folder: Path) -> None:
        deid = self._deidentifier()
        folder.mkdir()
        for number, path in enumerate(source.paths, start=1):
            dataset = _read(path, pixels=True)
            clean = deid.apply(dataset)
            pydicom.dcmwrite(folder / f"{number:04d}.dcm", clean, enforce_file_format=True)

    def _volumes(
        self, source: SeriesSource, first: pydicom.Dataset
    ) -> tuple[list[Volume], dict[str, Any] | None]:
        """The preprocessed volume, or one per time frame of a dynamic series with the
        frames' timing (for the NIfTI's sidecar).

        Volumes are read from the original files, before de-identification removes what
        steps may need (a PET's patient weight and injection time for SUV).
        """
        from dicomnode.datasets.dynamic import is_dynamic, load_dynamic
        from dicomnode.datasets.nifti import frame_timing
        from dicomnode.pipeline.loading import load_series

        # Series Type is a series attribute (Type 1 in the PET Series module): the first
        # header answers; load_series and load_dynamic read every header once themselves.
        if is_dynamic([first]):
            dynamic = load_dynamic(source.paths, limits=self.request.limits)
            frames = [self._prepared(volume) for volume in dynamic.volumes]
            timing = frame_timing(
                dynamic.frame_seconds, dynamic.durations_seconds, dynamic.start_seconds
            )
            return frames, timing
        loaded = load_series(source.paths, limits=self.request.limits)
        return [self._prepared(loaded.volume)], None

    def _prepared(self, volume: Volume) -> Volume:
        if not self._steps:
            return volume
        prepared, _trace = run_steps(volume, self._steps)
        return prepared

    def _write_nifti(
        self, volumes: list[Volume], timing: dict[str, Any] | None, path: Path
    ) -> None:
        from dicomnode.datasets.nifti import (
            save_nifti,
            save_sidecar,
            sidecar_path,
            to_nifti,
            to_nifti_4d,
        )

        if timing is None:
            save_nifti(to_nifti(volumes[0]), path)
            return
        save_nifti(to_nifti_4d(volumes, timing["FrameReferenceTime"]), path)
        save_sidecar(timing, sidecar_path(path))

    def _write_images(self, volumes: list[Volume], formats: list[str], folder: Path) -> None:
        from dicomnode.datasets.images import write_slices

        folder.mkdir()
        for index, volume in enumerate(volumes, start=1):
            target = folder if len(volumes) == 1 else folder / f"frame-{index:03d}"
            target.mkdir(exist_ok=True)
            for fmt in formats:
                write_slices(volume, target, fmt)  # type: ignore[arg-type]

    # -- the manifest and the end -------------------------------------------------------

    def _read_manifest(self) -> list[dict[str, str]]:
        if not self._manifest.exists():
            return []
        with self._manifest.open(newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))

    def _append_row(self, row: dict[str, str]) -> None:
        new = not self._manifest.exists()
        with self._manifest.open("a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=MANIFEST_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            file.flush()
            os.fsync(file.fileno())

    def _finish(self, outcome: ExportOutcome) -> None:
        deid = self._deidentifier()
        if self.request.mapping is not None:
            _merge_mapping(self.request.mapping, deid)
        if not outcome.failed and not self.request.keep_key:
            (self._state / "key").unlink(missing_ok=True)

    def _deidentifier(self) -> Deidentifier:
        if self._deid is None:
            raise RuntimeError("Export.open() first")
        return self._deid


def _read(path: Path, *, pixels: bool) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:  # noqa: BLE001 - named below: any reader error is the file's
        raise ValueError(f"{path}: not readable as DICOM ({type(exc).__name__})") from None


def _reason(exc: Exception) -> str:
    """The failure for the operator: our errors' messages (they name files and keys, never
    patient data); for anything else only its type, since a library's message may quote
    a header value."""
    from dicomnode.errors import DicomNodeError

    if isinstance(exc, DicomNodeError | ValueError | OSError):
        return str(exc) or type(exc).__name__
    return type(exc).__name__


def _merge_mapping(path: Path, deid: Deidentifier) -> None:
    """Write this run's mapping, keeping what an earlier run of the export wrote."""
    earlier: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as file:
            earlier = list(csv.DictReader(file))
    deid.write_mapping(path, earlier)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


def _sync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for path in (folder, *(p for p in folder.rglob("*") if p.is_dir())):
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
