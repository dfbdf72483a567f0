"""OHIF 3.x, as a radiologist opens it, shows the AI's own numbers from our SR.

The viewer is the prebuilt ``@ohif/app`` from the npm registry (`ohif_dist`), served
on loopback with a proxy to a throw-away Orthanc's DICOMweb plugin; Debian's Chromium,
headless, is driven by Playwright. For the real CT (its SEG, SR and summary image from
the ``ct-tissue-reference`` pipeline) and for the PET phantom (``pet-suv-reference``),
the test opens the study, then the SR, and reads what OHIF shows for each finding:

- the SR viewport draws each region with the SR's own NUM values
  (``Volume: 93.17 ml``); the test steps through the regions with the viewport's
  arrows and reads each annotation;
- where OHIF can turn a region into one of its tools, it offers to "track" the SR;
  a reader accepts, and the regions become OHIF's tools, listed in the measurement
  panel with what the tools compute. The test then accepts too and reads the panel.

Every finding of the SR must appear with each of its NUM values, rounded as OHIF rounds
them (0 to 3 decimals), followed by its unit (the UCUM code OHIF prints, or the usual
label): in one annotation, each value after its own name ("Mean: 550.00 [hnsf'U]",
"Maximum: ..."), or, once tracked, in its panel row. A finding's values must have
distinct names, so that a reader tells a mean from a maximum. No console error, no
uncaught exception, no unhandled promise rejection (OHIF loads an SR in promises whose
rejections nobody catches: Chromium does not report them as page errors, so the page
logs them itself) and no exception logged as a warning (OHIF's SR adapter logs a
``TypeError`` for a measurement group it cannot read) may occur.

An SR with nothing to draw (nothing found; a classifier's) cannot be opened in OHIF
3.13.2 without an error, whatever its TID 1500 encoding: the two tests of those cases
are expected failures that record what OHIF does (see their docstrings).

With ``DICOMNODE_SCREENSHOTS=DIR`` the test saves ``ohif-ct-sr.png`` and
``ohif-pet-sr.png`` there (the screenshots in docs/images/); otherwise into its tmp_path,
named in a failure's message.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomnode.phantom.ct import CTPhantomSpec, write_ct_phantom
from dicomnode.phantom.pet import PETPhantomSpec, write_pet_phantom
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.pipeline.engine import PipelineEngine
from dicomnode.results import AlgorithmInfo, Finding, save, write_sr
from dicomnode.results.codes import Code
from dicomnode.runners import ModelHost
from dicomnode.testing.ohif_viewer import OHIF_VERSION, ViewerServer, ViewerUnavailable, ohif_dist
from dicomnode.testing.orthanc import DICOMWEB_PLUGIN, Orthanc
from dicomnode.testing.process import HarnessTimeoutError, poll_until

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]
LOAD_TIMEOUT_MS = 90_000
STEP_TIMEOUT_S = 10.0
DRAW_TIMEOUT_S = 20.0
MAX_OPENINGS = 4
# How OHIF may print a UCUM unit besides its code value (which its SR viewport prints).
UNIT_LABELS = {
    "ml": ("mL",),
    "[hnsf'U]": ("HU",),
    "g/ml{SUVbw}": ("SUV", "SUVbw"),
    "{SUVbw}g/ml": ("SUV", "SUVbw"),
}
THUMBNAIL = '[data-cy="study-browser-thumbnail-no-image"]'
ROWS = '[data-cy^="measurement-table-row-"]'
VIEWPORT = '[data-cy="viewport-pane"]'
SR_LOADED = '[data-cy="ModalityLoadBadge-default"]'  # the SR viewport's "SR" badge
NEXT_MEASUREMENT = '[data-cy="viewport-action-arrows-right"]'
SLICE = '[data-cy="viewport-overlay-bottom-right"]'  # "I: 12 (17/28)"
REPORT_REJECTIONS = (
    "window.addEventListener('unhandledrejection', event => console.error("
    "'unhandled rejection: ' + String(event.reason && event.reason.stack || event.reason)));"
)


@dataclass(frozen=True, slots=True)
class Value:
    """One NUM of the SR: its name (the concept's meaning), its value and its UCUM unit."""

    name: str
    value: float
    unit: str

    def pattern(self, named: bool = True) -> re.Pattern[str]:
        """The value as OHIF may print it (0 to 3 decimals), then one of its unit labels;
        ``named``: after its name, as OHIF's SR viewport writes it ("Mean: 5.00 ml")."""
        shown = {_fixed(self.value, decimals) for decimals in range(4)}
        labels = (self.unit, *UNIT_LABELS.get(self.unit, ()))
        numbers = "|".join(re.escape(s) for s in sorted(shown, key=len, reverse=True))
        units = "|".join(re.escape(u) for u in labels)
        name = rf"{re.escape(self.name)}:\s*" if named else r"(?<![\d.\-])"
        return re.compile(rf"{name}(?:{numbers})\s*(?:{units})(?![A-Za-z/{{\[])")

    def __str__(self) -> str:
        return f"{self.name} {self.value:g} {self.unit}"


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0" if re.fullmatch(r"-?0(\.0*)?", text) and decimals == 0 else text


def sr_findings(sr: Dataset) -> dict[str, list[Value]]:
    """NUM values per finding (Tracking Identifier), from every measurement group."""
    found: dict[str, list[Value]] = {}
    for container in sr.ContentSequence:
        if container.ValueType != "CONTAINER" or _name(container) != "Imaging Measurements":
            continue
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            tracking = [str(i.TextValue) for i in items if _name(i) == "Tracking Identifier"]
            if not tracking:
                continue
            values = found.setdefault(tracking[0], [])
            for item in items:
                if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
                    measured = item.MeasuredValueSequence[0]
                    unit = str(measured.MeasurementUnitsCodeSequence[0].CodeValue)
                    values.append(Value(_describe(item), float(measured.NumericValue), unit))
    return {name: values for name, values in found.items() if values}


def _name(item: Dataset) -> str:
    return (
        str(item.ConceptNameCodeSequence[0].CodeMeaning)
        if "ConceptNameCodeSequence" in item
        else ""
    )


def _describe(num: Dataset) -> str:
    return _name(num)  # OHIF labels a NUM by its concept's meaning alone


@dataclass(frozen=True, slots=True)
class Study:
    """A study in Orthanc: its UID, and the SR whose findings OHIF must show."""

    uid: str
    sr: Dataset


@dataclass
class ConsoleLog:
    """What the page reported: console errors, uncaught exceptions, exceptions as warnings."""

    problems: list[str]
    reopened: int = 0  # openings again because nothing was drawn

    def listen(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))

    def _console(self, message: Any) -> None:
        text = str(message.text)
        if message.type == "error" or (
            message.type == "warning" and re.search(r"\b\w*Error\b", text)
        ):
            self.problems.append(f"console {message.type}: {text.splitlines()[0]}")


@pytest.fixture(scope="module")
def viewer_dist() -> Path:
    """OHIF's prebuilt viewer: fetched once with npm into the user's cache."""
    try:
        return ohif_dist()
    except ViewerUnavailable as exc:
        if shutil.which("npm") is None and not IN_CI:
            pytest.skip(f"OHIF {OHIF_VERSION} cannot be fetched: {exc}")
        pytest.fail(f"OHIF {OHIF_VERSION} cannot be fetched: {exc}")


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    if not DICOMWEB_PLUGIN.is_file():
        message = "Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with Orthanc(dicomweb=True) as server:
        yield server


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineEngine]:
    models, pipelines = reference_definitions()
    with ModelHost(models, tmp_path_factory.mktemp("models")) as host:
        yield PipelineEngine(pipelines, host)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox"],  # CI runs as root, where Chromium's sandbox cannot start
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _store(
    engine: PipelineEngine, orthanc: Orthanc, pipeline: str, images: list[Path], out: Path
) -> Study:
    """Run the pipeline, then upload the images and every result into Orthanc."""
    result = engine.run(pipeline, images)
    (sr,) = [ds for ds in result.datasets if ds.Modality == "SR"]
    assert any(ds.Modality == "SEG" for ds in result.datasets), "the pipeline made no SEG"
    for path in [*images, *(save(ds, out) for ds in result.datasets)]:
        orthanc.upload(path)
    return Study(str(sr.StudyInstanceUID), sr)


@pytest.fixture
def screenshots() -> Path | None:
    folder = os.environ.get("DICOMNODE_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open_sr(
    browser: Any, viewer: ViewerServer, study: Study, log: ConsoleLog, wait: bool = True
) -> Any:
    """Open the study, then its SR in the viewport; returns the page."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # OHIF's first-visit tour would cover the viewport; mark it as seen.
    context.add_init_script(
        "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"
    )
    context.add_init_script(REPORT_REJECTIONS)
    page = context.new_page()
    log.listen(page)
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.goto(f"{viewer.url}/viewer?StudyInstanceUIDs={study.uid}")
    sr_thumbnail = page.locator(THUMBNAIL).filter(
        has=page.locator('[data-cy="series-modality-label"]', has_text=re.compile(r"^SR$"))
    )
    # As a reader would, let the first images show before opening the SR: replacing a
    # viewport whose images are still loading makes OHIF 3.13.2 log "IMAGE_LOAD_ERROR
    # TypeError: handler is not a function" (its listener of the cancelled load).
    page.locator(SLICE).first.wait_for()
    sr_thumbnail.dblclick()
    if wait:
        page.locator(SR_LOADED).wait_for()
    return page


def _drawn(page: Any) -> bool:
    """Whether the SR viewport draws any annotation within DRAW_TIMEOUT_S."""
    try:
        poll_until(lambda: bool(_annotations(page)), timeout=DRAW_TIMEOUT_S, what="annotations")
    except HarnessTimeoutError:
        return False
    return True


def _annotations(page: Any) -> list[str]:
    """The text of each annotation OHIF draws in the viewport (one SVG text each)."""
    texts = page.locator(f"{VIEWPORT} svg text").all()  # SVG has textContent, no innerText
    return [
        " ".join(t.locator("tspan").all_text_contents()) or (t.text_content() or "") for t in texts
    ]


def _where(page: Any) -> tuple[str, tuple[str, ...]]:
    return page.locator(SLICE).inner_text(), tuple(_annotations(page))


def _viewport_texts(page: Any, steps: int, done: Any) -> list[str]:
    """Step through the SR's measurements with the viewport's arrows; every annotation.

    Each step waits until the slice or its annotations change (two regions may share a
    slice: then the wait ends at its timeout).
    """
    seen: list[str] = []
    for _ in range(steps + 1):
        seen += [t for t in _annotations(page) if t not in seen]
        if done(seen):
            break
        before = _where(page)
        page.locator(NEXT_MEASUREMENT).click()
        try:
            poll_until(
                lambda before=before: _where(page) != before,
                timeout=STEP_TIMEOUT_S,
                what="the next measurement",
            )
        except HarnessTimeoutError:
            continue
    return seen


def _panel(page: Any) -> dict[str, str]:
    """The measurement panel: each row's text, keyed by its title."""
    panel: dict[str, str] = {}
    for row in page.locator(ROWS).all():
        title = row.locator('[data-cy="data-row-title"]').inner_text().strip()
        panel[title] = " ".join(row.inner_text().split())
    return panel


def _tracking_offered(page: Any) -> tuple[bool, str]:
    """Whether OHIF offers to track the SR's measurements, and its SR badge's tooltip.

    OHIF offers it when it maps at least one region to one of its tools; the SR
    badge's tooltip says which ("Click LOAD to restore measurements." or "This structured
    report is not compatible with this application.").
    """
    page.locator(SR_LOADED).hover()
    tooltip = page.get_by_role("tooltip").first
    tooltip.wait_for()
    text = tooltip.text_content() or ""
    return "restore measurements" in text, text


def _missing(
    expected: dict[str, list[Value]], candidates: list[str], named: bool = True
) -> list[str]:
    """For each finding, the values that no text shows: all of a finding's values must
    appear together in one text (an annotation, a panel row), each with its unit (and,
    ``named``, after its name)."""
    missing = []
    for finding, values in expected.items():
        if any(all(v.pattern(named).search(text) for v in values) for text in candidates):
            continue
        absent = [v for v in values if not any(v.pattern(named).search(t) for t in candidates)]
        missing += [f"{finding}: {v}" for v in absent] or [f"{finding}: values split up"]
    return missing


def _check_viewer(
    browser: Any,
    viewer: ViewerServer,
    study: Study,
    findings: set[str],
    screenshot: Path,
) -> None:
    """What a reader sees: the SR's annotations in the viewport; and where OHIF offers to
    track the SR (its prompt, which a reader accepts), the measurement panel afterwards,
    as tracking replaces the annotations with OHIF's own tools."""
    expected = sr_findings(study.sr)
    assert findings <= expected.keys(), f"the SR has no values for {findings - expected.keys()}"
    for finding, values in expected.items():  # else a reader cannot tell them apart
        names = [v.name for v in values]
        assert len(set(names)) == len(names), f"{finding}: values share a name: {names}"
    log = ConsoleLog([])
    page = _open_sr(browser, viewer, study, log)
    for _ in range(MAX_OPENINGS - 1):
        if _drawn(page):
            break
        # OHIF 3.13.2 now and then (about 1 run in 8 here; under CI's load once twice in
        # a row) shows the SR's slice and badge but draws none of its annotations, with
        # nothing in the console; opening the study again draws them, as a reader would.
        page.context.close()
        log.reopened += 1
        page = _open_sr(browser, viewer, study, log)
    try:
        offered, badge = _tracking_offered(page)
        panel: dict[str, str] = {}
        if offered:
            # Answer the prompt first: stepping through the regions dismisses it.
            annotations = _annotations(page)
            page.locator('[data-cy="yes-hydrate-btn"]').click()
            if not page.locator(ROWS).count():  # the right panel may start folded
                page.locator('[data-cy="trackedMeasurements-btn"]').click()
            page.locator(ROWS).first.wait_for()
            panel = _panel(page)
            shown = list(panel.values())
        else:
            annotations = _viewport_texts(
                page,
                _planar_groups(study.sr),
                lambda seen: not _missing(expected, seen),
            )
            shown = annotations
        page.screenshot(path=str(screenshot))
        missing = _missing(expected, shown, named=not offered)
        report = "\n".join(
            [
                f"OHIF {OHIF_VERSION}, SR badge: {badge}"
                + (f" (opened again {log.reopened}x: nothing was drawn)" if log.reopened else ""),
                "viewport annotations" + (" (before tracking, this slice):" if offered else ":"),
                *(f"  {text}" for text in annotations),
                "measurement panel (after tracking):" if offered else "not tracked",
                *(f"  {title}: {text}" for title, text in panel.items()),
                "not shown (value and unit):",
                *(f"  {m}" for m in missing),
                "console:",
                *(f"  {p}" for p in log.problems),
                f"screenshot: {screenshot}",
            ]
        )
        assert not missing, report
        assert not log.problems, report
    finally:
        page.context.close()


def _planar_groups(sr: Dataset) -> int:
    """How many measurement groups draw a region (SCOORD) on an image."""
    count = 0
    for container in sr.ContentSequence:
        for group in container.get("ContentSequence", []):
            items = group.get("ContentSequence", [])
            count += any(i.ValueType == "SCOORD" for i in items)
    return count


@pytest.mark.filterwarnings('ignore:The string "HEAD" is unlikely:UserWarning')  # the real name
def test_ohif_shows_the_real_ct_findings_with_the_srs_values(
    viewer_dist: Path,
    orthanc: Orthanc,
    engine: PipelineEngine,
    browser: Any,
    real_ct_images: list[Path],
    tmp_path: Path,
    screenshots: Path | None,
) -> None:
    study = _store(engine, orthanc, "ct-tissue-reference", real_ct_images, tmp_path / "results")
    with ViewerServer(viewer_dist, orthanc.http_port) as viewer:
        _check_viewer(
            browser,
            viewer,
            study,
            {"Fat", "Soft tissue", "Bone"},
            (screenshots or tmp_path) / "ohif-ct-sr.png",
        )


def test_ohif_shows_the_pet_lesion_with_the_srs_suv_values(
    viewer_dist: Path,
    orthanc: Orthanc,
    engine: PipelineEngine,
    browser: Any,
    tmp_path: Path,
    screenshots: Path | None,
) -> None:
    pet = write_pet_phantom(tmp_path / "pet", PETPhantomSpec())
    study = _store(engine, orthanc, "pet-suv-reference", list(pet.paths), tmp_path / "results")
    lesions = set(sr_findings(study.sr))
    assert lesions, "the PET SR has no finding with values"
    with ViewerServer(viewer_dist, orthanc.http_port) as viewer:
        _check_viewer(
            browser, viewer, study, lesions, (screenshots or tmp_path) / "ohif-pet-sr.png"
        )


# Why an SR with nothing to draw fails in OHIF 3.13.2 (extensions/cornerstone-dicom-sr):
# a TID 1500 SR ("Imaging Measurement Report") opens in its measurement viewport, which
# needs at least one finding with an image region. A measurement group without an SCOORD
# (TID 1501: a classifier's finding and probability, or "Not found") becomes a finding
# with no coordinates, and getSopClassHandlerModule's _checkIfCanAddMeasurementsToDisplaySet
# reads coords[0].ReferencedSOPSequence of it: TypeError, the SR's load promise rejects.
# With no measurement group at all (absent findings only in Qualitative Evaluations, or
# an empty or missing Imaging Measurements), the load succeeds, and then
# OHIFCornerstoneSRMeasurementViewport's _getViewportReferencedDisplaySetData destructures
# measurements[0]: TypeError. Either way the viewport stays black, without the SR badge.
# Other titles of CID 7021 would open OHIF's text viewport, but none fits a CT report.
NOTHING_TO_DRAW = (
    "OHIF 3.13.2 throws on a TID 1500 SR without a finding that has an image region "
    "(see the comment above)"
)
OPEN_TIMEOUT_S = 30.0


def _air_ct(folder: Path) -> list[Path]:
    """A small CT phantom in which every voxel is air (-1000 HU): nothing to find."""
    series = write_ct_phantom(
        folder / "phantom", CTPhantomSpec(slices=6, rows=64, columns=64, seed=1301)
    )
    paths = []
    for source in series.paths:
        ds = pydicom.dcmread(source)
        air = round((-1000.0 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
        ds.PixelData = np.full_like(ds.pixel_array, air).tobytes()
        path = folder / source.name
        ds.save_as(path)
        paths.append(path)
    return paths


def _check_opens(browser: Any, viewer: ViewerServer, study: Study, screenshot: Path) -> None:
    """OHIF opens the SR: its SR viewport shows (the SR badge), with no console error."""
    log = ConsoleLog([])
    page = _open_sr(browser, viewer, study, log, wait=False)
    try:
        with contextlib.suppress(HarnessTimeoutError):  # then the asserts below say why
            poll_until(
                lambda: bool(log.problems) or page.locator(SR_LOADED).count() > 0,
                timeout=OPEN_TIMEOUT_S,
                what="the SR viewport or an error",
            )
        page.screenshot(path=str(screenshot))
        shown = page.locator(SR_LOADED).count() > 0
        report = "\n".join(
            [
                f"OHIF {OHIF_VERSION}: SR viewport {'shown' if shown else 'not shown'}",
                "console:",
                *(f"  {p}" for p in log.problems),
                f"screenshot: {screenshot}",
            ]
        )
        assert not log.problems, report
        assert shown, report
    finally:
        page.context.close()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=NOTHING_TO_DRAW)
def test_ohif_opens_the_sr_of_a_ct_in_which_nothing_was_found(
    viewer_dist: Path,
    orthanc: Orthanc,
    engine: PipelineEngine,
    browser: Any,
    tmp_path: Path,
) -> None:
    images = _air_ct(tmp_path / "air")
    result = engine.run("ct-tissue-reference", images)
    (sr,) = [ds for ds in result.datasets if ds.Modality == "SR"]
    assert not any(ds.Modality == "SEG" for ds in result.datasets), "the pipeline found something"
    for path in [*images, *(save(ds, tmp_path / "results") for ds in result.datasets)]:
        orthanc.upload(path)
    with ViewerServer(viewer_dist, orthanc.http_port) as viewer:
        _check_opens(browser, viewer, Study(str(sr.StudyInstanceUID), sr), tmp_path / "nothing.png")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=NOTHING_TO_DRAW)
def test_ohif_opens_a_classifiers_sr(
    viewer_dist: Path, orthanc: Orthanc, browser: Any, tmp_path: Path
) -> None:
    # What a classification pipeline writes (PipelineEngine: write_sr with its findings;
    # tests/pipeline/test_pipeline_e2e.py runs one): a finding with its probability.
    series = write_ct_phantom(
        tmp_path / "ct", CTPhantomSpec(slices=4, rows=64, columns=64, seed=1302)
    )
    sources = [pydicom.dcmread(p) for p in series.paths]
    finding = Finding(Code("129718004", "SCT", "Dense breast"), probability=0.87)
    sr = write_sr(
        sources,
        None,
        None,
        (),
        AlgorithmInfo("dense-classifier", "0.1"),
        series_number=9001,
        findings=[finding],
    )
    for path in [*series.paths, save(sr, tmp_path / "results")]:
        orthanc.upload(path)
    with ViewerServer(viewer_dist, orthanc.http_port) as viewer:
        _check_opens(
            browser, viewer, Study(str(sr.StudyInstanceUID), sr), tmp_path / "classifier.png"
        )
