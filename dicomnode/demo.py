"""``dicomnode demo``: the whole flow on one machine, with nothing to configure.

A node and a second node standing in for the PACS run on loopback ports in a work folder.
Synthetic CT and PET phantoms with known answers (two patients, each its own study) are
sent in; the reference pipelines
segment them; SEG and SR travel back to the "PACS"; the values read from the SR that
arrived are printed beside the phantoms' true values, with the time each stage took.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from rich.console import Console
from rich.table import Table

from dicomnode.config import Config
from dicomnode.dicom.address import DicomAddress
from dicomnode.dicom.scu import SendableFile, inspect_file, send_files
from dicomnode.node import Node
from dicomnode.phantom import (
    CTPhantomSeries,
    CTPhantomSpec,
    PETPhantomSeries,
    PETPhantomSpec,
    write_ct_phantom,
    write_pet_phantom,
)

DEMO_RULES = """\
# Written by `dicomnode demo`: route each phantom to its reference pipeline.
- name: ct-to-tissue-reference
  match: {Modality: CT}
  pipeline: ct-tissue-reference
  send_to: [pacs]
- name: pet-to-suv-reference
  match: {Modality: PT, Units: BQML}
  pipeline: pet-suv-reference
  send_to: [pacs]
"""
CT_TOLERANCE = 0.02  # relative, per the reference pipeline's promise
PET_TOLERANCE = 0.01
WAIT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Row:
    series: str
    quantity: str
    measured: float | None
    truth: float
    tolerance: float

    @property
    def ok(self) -> bool:
        if self.measured is None:
            return False
        return abs(self.measured - self.truth) <= self.tolerance * max(abs(self.truth), 1e-9)


def run_demo(workdir: Path | None = None, console: Console | None = None) -> int:
    """Run the demonstration; returns the exit code (0: every value within tolerance; 2: a
    ``workdir`` that is not empty, refused rather than reporting stale results)."""
    console = console or Console()
    if workdir is not None and workdir.is_dir() and any(workdir.iterdir()):
        # The phantoms' UIDs are fixed: sent again, every instance is a duplicate, nothing
        # is processed, and the PACS's old files would be reported as this run's results.
        console.print(
            f"[red]{workdir} is not empty (an earlier demo?): its node has these phantoms "
            "already and would process nothing. Remove it or give another --workdir.[/]"
        )
        return 2
    folder = workdir or Path(tempfile.mkdtemp(prefix="dicomnode-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    console.print(f"[bold]dicomnode demo[/] in {folder}")
    with _nodes(folder) as (node, pacs):
        started = time.perf_counter()
        ct, pet = write_demo_phantoms(folder / "phantoms")
        timings["generate phantoms"] = time.perf_counter() - started
        console.print(
            f"phantoms: CT {len(ct.paths)} slices, PET {len(pet.paths)} slices "
            f"(reference pipelines: not clinical)"
        )
        started = time.perf_counter()
        _send([*ct.paths, *pet.paths], node)
        sent_at = time.perf_counter()
        timings["send to the node"] = sent_at - started
        console.print(
            f"sent {len(ct.paths) + len(pet.paths)} instances to {node.config.node.ae_title}"
        )
        arrived = _wait_for_results(pacs, expected=4)
        timings["last image acknowledged -> SEG and SR at the PACS"] = time.perf_counter() - sent_at
        if arrived is None:
            console.print("[red]the results did not reach the PACS in time[/]")
            _print_jobs(console, node)
            return 1
        rows = _compare(arrived, ct, pet)
        _print_results(console, rows)
        _print_jobs(console, node)
        _print_timings(console, timings)
        console.print(f"PACS files: {pacs.spool.objects}  (node: {node.spool.objects})")
        failed = [row for row in rows if not row.ok]
        if failed:
            console.print(f"[red]{len(failed)} values outside tolerance[/]")
            return 1
        console.print("[green]all values within tolerance[/]")
        return 0


def write_demo_phantoms(folder: Path) -> tuple[CTPhantomSeries, PETPhantomSeries]:
    """The CT and the PET phantom, as ``folder/ct`` and ``folder/pet``: two patients, two studies.

    They are different subjects (an abdomen with no lesions, a whole body with three), and
    the SUV pipeline reads only the PET's own header, so nothing links them: each is its own
    patient's study, and a PACS or viewer indexes them as two consistent studies.
    """
    ct = write_ct_phantom(folder / "ct", CTPhantomSpec(slices=60, rows=256, columns=256))
    pet = write_pet_phantom(folder / "pet", PETPhantomSpec())
    return ct, pet


class _nodes:  # noqa: N801 - used as a context manager, reads as one
    """The node and the stand-in PACS, stopped on exit whatever happens."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Node] = []

    def __enter__(self) -> tuple[Node, Node]:
        (self.folder / "pacs" / "rules").mkdir(parents=True, exist_ok=True)  # no routing
        pacs = Node(
            Config.model_validate(
                {
                    "node": {"ae_title": "PACS", "host": "127.0.0.1", "port": 0},
                    "storage": {"path": str(self.folder / "pacs")},
                    "rules_dir": str(self.folder / "pacs" / "rules"),
                    "admin": {"enabled": False},
                    "logging": {"level": "warning"},
                }
            )
        )
        pacs.start()
        self.started.append(pacs)
        rules = self.folder / "node" / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        (rules / "demo.yaml").write_text(DEMO_RULES)
        node = Node(
            Config.model_validate(
                {
                    "node": {"ae_title": "DICOMNODE", "host": "127.0.0.1", "port": 0},
                    "storage": {"path": str(self.folder / "node")},
                    "rules_dir": str(rules),
                    "admin": {"port": 0},
                    "completion": {"quiet_seconds": 5, "settle_seconds": 1},
                    "destinations": {
                        "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs.scp.port}
                    },
                }
            )
        )
        node.start()
        self.started.append(node)
        return node, pacs

    def __exit__(self, *_exc: object) -> None:
        for node in reversed(self.started):
            node.stop()


def _send(paths: Sequence[Path], node: Node) -> None:
    files = [f for f in map(inspect_file, paths) if isinstance(f, SendableFile)]
    port = node.scp.port
    if port is None:
        raise RuntimeError("the demo sends over the plain port; node.port is null")
    address = DicomAddress(node.config.node.ae_title, "127.0.0.1", port)
    results = send_files(files, address)
    if not all(r.ok for r in results):
        raise RuntimeError(f"the node refused {sum(not r.ok for r in results)} instances")


def _wait_for_results(pacs: Node, expected: int) -> list[pydicom.Dataset] | None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = [
            s for s in pacs.index.list_series() if s.modality in {"SEG", "SR"} and s.instance_count
        ]
        if len(found) >= expected:
            return [
                pydicom.dcmread(pacs.spool.path(row.spool_name))
                for s in found
                for row in pacs.index.instances_of(s.id)
            ]
        time.sleep(0.2)
    return None


def _compare(arrived: Sequence[pydicom.Dataset], ct: Any, pet: Any) -> list[Row]:
    by_name: dict[str, dict[str, float]] = {}
    for ds in arrived:
        if ds.Modality == "SR":
            for group, values in _sr_measurements(ds).items():
                by_name.setdefault(group, {}).update(values)
    truth = ct.truth
    mean = ct.mean_hu
    rows = [
        Row("CT", "Fat volume (ml)", _get(by_name, "Fat", "Volume"), truth.fat_ml, CT_TOLERANCE),
        Row("CT", "Soft tissue volume (ml)", _get(by_name, "Soft tissue", "Volume"),
            truth.soft_tissue_ml, CT_TOLERANCE),
        Row("CT", "Bone volume (ml)", _get(by_name, "Bone", "Volume"), truth.bone_ml, CT_TOLERANCE),
        Row("CT", "Fat mean (HU)", _get(by_name, "Fat", "mean"), mean.fat, CT_TOLERANCE),
        Row("CT", "Soft tissue mean (HU)", _get(by_name, "Soft tissue", "mean"),
            mean.soft_tissue, CT_TOLERANCE),
        Row("CT", "Bone mean (HU)", _get(by_name, "Bone", "mean"), mean.bone, CT_TOLERANCE),
    ]  # fmt: skip
    region = "SUV 2.5 region"
    suv = pet.truth
    rows += [
        Row("PET", "SUVmax", _get(by_name, region, "max"), suv.suv_max, PET_TOLERANCE),
        Row("PET", "SUVmean", _get(by_name, region, "mean"), suv.suv_mean, PET_TOLERANCE),
        Row("PET", "MTV (ml)", _get(by_name, region, "Metabolic"), suv.mtv_ml, PET_TOLERANCE),
        Row("PET", "TLG (g)", _get(by_name, region, "Glycolysis"), suv.tlg, PET_TOLERANCE),
    ]
    return rows


def _get(by_name: dict[str, dict[str, float]], group: str, fragment: str) -> float | None:
    for name, value in by_name.get(group, {}).items():
        if fragment.lower() in name.lower():
            return value
    return None


def _sr_measurements(sr: pydicom.Dataset) -> dict[str, dict[str, float]]:
    """Tracking identifier -> measurement (name and derivation) -> value, from TID 1500."""
    found: dict[str, dict[str, float]] = {}
    for group in _walk(sr):
        tracking = next(
            (
                item.TextValue
                for item in group.get("ContentSequence", [])
                if item.get("ValueType") == "TEXT"
                and item.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"
            ),
            None,
        )
        if tracking is None:
            continue
        for item in group.get("ContentSequence", []):
            if item.get("ValueType") != "NUM" or "MeasuredValueSequence" not in item:
                continue
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            derivation = next(
                (
                    c.ConceptCodeSequence[0].CodeMeaning
                    for c in item.get("ContentSequence", [])
                    if c.ConceptNameCodeSequence[0].CodeMeaning == "Derivation"
                ),
                "",
            )
            value = float(item.MeasuredValueSequence[0].NumericValue)
            found.setdefault(tracking, {})[f"{derivation} {name}".strip()] = value
    return found


def _walk(dataset: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    for item in dataset.get("ContentSequence", []):
        if item.get("ValueType") == "CONTAINER":
            yield item
            yield from _walk(item)


def _print_results(console: Console, rows: Sequence[Row]) -> None:
    table = Table(title="Results read back from the SR that reached the PACS")
    for column in ("series", "quantity", "measured", "true", "difference", ""):
        table.add_column(column)
    for row in rows:
        measured = "missing" if row.measured is None else f"{row.measured:.3f}"
        diff = (
            ""
            if row.measured is None
            else f"{100 * (row.measured - row.truth) / max(abs(row.truth), 1e-9):+.3f} %"
        )
        mark = "[green]ok[/]" if row.ok else f"[red]> {row.tolerance:.0%}[/]"
        table.add_row(row.series, row.quantity, measured, f"{row.truth:.3f}", diff, mark)
    console.print(table)


def _print_jobs(console: Console, node: Node) -> None:
    table = Table(title="Pipeline jobs and the seconds each stage took")
    table.add_column("job", no_wrap=True, min_width=len("pipeline-99"))
    for column in ("pipeline", "state", "stages", "error"):
        table.add_column(column)
    for job in node.workers.queue.list_jobs():
        stages = ", ".join(
            f"{s['stage']} {s['seconds']:.2f}" for s in job.timeline.get("stages", [])
        )
        table.add_row(f"pipeline-{job.id}", job.pipeline, job.state, stages, job.error or "")
    console.print(table)


def _print_timings(console: Console, timings: dict[str, float]) -> None:
    for name, seconds in timings.items():
        console.print(f"{name}: {seconds:.2f} s")
