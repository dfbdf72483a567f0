"""``dicomnode evaluate`` on labelled phantoms, against figures this test computes itself.

Classification: eight small PET phantoms, four with an uptake sphere (label 1) and four
without (label 0), judged by a python model whose probability is a logistic function of
the SUVmax. The SUVs are chosen so that one positive is missed and two negatives are
called positive: sensitivity, specificity, PPV and NPV all differ from 1 and from each
other, and the test derives each of them (and the AUC) with plain numpy from the SUVs it
put into the phantoms. Segmentation: small CT phantoms through the built-in
``ct-tissue-reference`` pipeline, against reference SEGs made from the phantoms' truth
labels, one of them deliberately wrong on one slice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from openpyxl import Workbook

from dicomnode.cli import main
from dicomnode.datasets.evaluation_report import read_report
from dicomnode.errors import ConfigError
from dicomnode.phantom import (
    CTPhantomSpec,
    Lesion,
    PETPhantomSpec,
    write_ct_phantom,
    write_pet_phantom,
)
from dicomnode.phantom.anatomy import Anatomy, Tissue
from dicomnode.pipeline.definition import reference_definitions
from dicomnode.results.content import AlgorithmInfo
from dicomnode.results.seg import write_seg

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CENTRE, SLOPE = 3.0, 2.0  # the model: p = 1 / (1 + exp(-SLOPE * (SUVmax - CENTRE)))
MODEL_MODULE = "evaluate_suvmax_model"
MODEL_SOURCE = f"""\
import numpy as np


def probability(array):
    suv_max = float(np.max(array))
    return np.array([1.0 / (1.0 + np.exp(-{SLOPE} * (suv_max - {CENTRE})))])
"""
CONFIG = f"""\
models:
  suvmax-logistic:
    kind: python
    function: "{MODEL_MODULE}:probability"
    isolation: thread
pipelines:
  uptake:
    steps: [{{kind: suv}}]
    model: suvmax-logistic
    output:
      kind: classification
      findings:
        - index: 0
          finding: {{value: "52988006", meaning: Lesion}}
          threshold: 0.5
    algorithm: {{name: suvmax-logistic, version: "1"}}
"""


@dataclass(frozen=True)
class PETCase:
    item: str
    label_text: str  # as written in the manifest
    label: int
    suv_max: float  # of the phantom: the lesion's SUV, else the body's
    thickness_mm: float


# SUVmax 2.0 (positive) falls below the threshold's 3.0; 3.2 and 3.5 (negative) above it.
CASES = (
    PETCase("0001", "1", 1, 2.0, 4.0),
    PETCase("0002", "yes", 1, 4.0, 6.0),
    PETCase("0003", "Positive", 1, 6.0, 4.0),
    PETCase("0004", "TRUE", 1, 8.0, 6.0),
    PETCase("0005", "0", 0, 1.0, 4.0),
    PETCase("0006", "no", 0, 1.5, 6.0),
    PETCase("0007", "negative", 0, 3.2, 4.0),
    PETCase("0008", "false", 0, 3.5, 6.0),
)


def _pet_spec(case: PETCase, seed: int) -> PETPhantomSpec:
    lesion = case.label == 1
    return PETPhantomSpec(
        slices=4,
        rows=32,
        columns=32,
        pixel_spacing_mm=12.0,
        slice_thickness_mm=case.thickness_mm,
        seed=seed,
        body_suv=1.0 if lesion else case.suv_max,
        lesions=(Lesion((0.0, 0.0, 0.0), 20.0, case.suv_max),) if lesion else (),
    )


def _probability(suv_max: float) -> float:
    return 1.0 / (1.0 + math.exp(-SLOPE * (suv_max - CENTRE)))


def _auc(labels: npt.NDArray[np.int_], scores: npt.NDArray[np.float64]) -> float:
    """The Mann-Whitney form: the share of (positive, negative) pairs ranked right."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def _expected(cases: tuple[PETCase, ...]) -> dict[str, float]:
    labels = np.array([c.label for c in cases])
    scores = np.array([_probability(c.suv_max) for c in cases])
    called = scores >= 0.5
    tp = int(np.sum(called & (labels == 1)))
    fp = int(np.sum(called & (labels == 0)))
    tn = int(np.sum(~called & (labels == 0)))
    fn = int(np.sum(~called & (labels == 1)))
    return {
        "auc": _auc(labels, scores),
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp),
        "npv": tn / (tn + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


@dataclass(frozen=True)
class ClassificationRun:
    code: int
    out: Path
    stdout: str
    report: dict[str, Any]
    model_file: Path


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClassificationRun]:
    root = tmp_path_factory.mktemp("evaluate-pet")
    model_dir = root / "model"
    model_dir.mkdir()
    model_file = model_dir / f"{MODEL_MODULE}.py"
    model_file.write_text(MODEL_SOURCE)
    (root / "config.yaml").write_text(CONFIG)
    rows = []
    for seed, case in enumerate(CASES, start=1):
        write_pet_phantom(root / "series" / case.item, _pet_spec(case, seed))
        rows.append([case.item, f"series/{case.item}", case.label_text])
    rows.append(["0009", "series/0009", ""])  # not labelled yet: skipped, counted
    rows.append(["0010", "series/missing", "1"])  # no files: fails, left out of the figures
    with (root / "manifest.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["item", "dicom", "label"])
        writer.writerows(rows)
    out = root / "report"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(model_dir))
        capture = _Capture()
        with capture:
            code = main(
                [
                    "evaluate",
                    "--pipeline", "uptake",
                    "--manifest", str(root / "manifest.csv"),
                    "--config", str(root / "config.yaml"),
                    "--out", str(out),
                ]
            )  # fmt: skip
    report = json.loads((out / "report.json").read_text()) if code == 0 else {}
    yield ClassificationRun(code, out, capture.text, report, model_file)


class _Capture:
    """Standard output of a call made inside a module-scoped fixture (no capsys there)."""

    def __enter__(self) -> None:
        import contextlib
        import io

        self._buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buffer)
        self._redirect.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._redirect.__exit__(*exc)  # type: ignore[arg-type]
        self.text = self._buffer.getvalue()


def test_classification_figures_match_an_independent_count(
    classification_run: ClassificationRun,
) -> None:
    assert classification_run.code == 0, classification_run.stdout
    c = classification_run.report["classification"]
    want = _expected(CASES)
    assert c["auc"] == pytest.approx(want["auc"])
    assert want["auc"] == pytest.approx(14 / 16)  # the design: only 2.0 ranks below 3.2, 3.5
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        assert c[key]["value"] == pytest.approx(want[key]), key
    assert c["confusion_matrix"] == {k: want[k] for k in ("tp", "fp", "tn", "fn")}
    assert (c["positives"], c["negatives"], c["threshold"]) == (4, 4, 0.5)
    low, high = c["auc_ci95"]["low"], c["auc_ci95"]["high"]
    assert 0.0 <= low < c["auc"] < high <= 1.0
    assert c["calibration"]["brier"] == pytest.approx(
        np.mean([(_probability(x.suv_max) - x.label) ** 2 for x in CASES]), abs=1e-5
    )
    assert "AUC 0.875" in classification_run.stdout
    assert "sensitivity 0.750 (3/4)" in classification_run.stdout


def test_items_carry_scores_and_failures_are_left_out(
    classification_run: ClassificationRun,
) -> None:
    report = classification_run.report
    items = {row["item"]: row for row in report["items"]}
    assert sorted(items) == [c.item for c in CASES] + ["0010"]
    for case in CASES:
        row = items[case.item]
        assert row["label"] == case.label and row["error"] is None
        assert row["score"] == pytest.approx(_probability(case.suv_max), abs=1e-4)
        assert row["predicted"] == int(_probability(case.suv_max) >= 0.5)
    assert "no files" in items["0010"]["error"]
    assert report["dataset"]["items"] == 9
    assert report["dataset"]["evaluated"] == 8
    assert report["dataset"]["failed"] == 1
    assert report["dataset"]["skipped_unlabelled"] == 1


def test_subgroups_break_the_figures_down_by_header_values(
    classification_run: ClassificationRun,
) -> None:
    bands = classification_run.report["subgroups"]["SliceThicknessBand"]
    assert set(bands) == {"3–5 mm", ">5 mm"}  # noqa: RUF001 - the band's own en dash
    for band, thickness in (("3–5 mm", 4.0), (">5 mm", 6.0)):  # noqa: RUF001
        cases = tuple(c for c in CASES if c.thickness_mm == thickness)
        want = _expected(cases)
        figures = bands[band]
        assert figures["items"] == len(cases)
        assert figures["auc"] == pytest.approx(want["auc"])
        assert figures["sensitivity"]["value"] == pytest.approx(want["sensitivity"])
        assert figures["specificity"]["value"] == pytest.approx(want["specificity"])
    manufacturers = classification_run.report["subgroups"]["Manufacturer"]
    assert list(manufacturers) == ["dicomnode phantom"]
    assert manufacturers["dicomnode phantom"]["items"] == 8
    assert list(classification_run.report["subgroups"]["ConvolutionKernel"]) == ["unknown"]


def test_reports_carry_the_hashes_and_the_pictures(
    classification_run: ClassificationRun,
) -> None:
    out, report = classification_run.out, classification_run.report
    model_sha256 = hashlib.sha256(classification_run.model_file.read_bytes()).hexdigest()
    assert report["kind"] == "dicomnode-evaluation" and report["version"] == 1
    assert report["model"] == "suvmax-logistic"
    assert report["model_sha256"] == model_sha256
    assert len(report["pipeline_sha256"]) == 64
    manifest = Path(report["dataset"]["manifest"])
    assert report["dataset"]["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    for name in ("roc.png", "calibration.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
    html = (out / "report.html").read_text()
    assert model_sha256 in html and report["pipeline_sha256"] in html
    assert report["dataset"]["manifest_sha256"] in html
    assert "data:image/png;base64," in html
    read = read_report(out / "report.json")
    assert read["report_sha256"] == hashlib.sha256((out / "report.json").read_bytes()).hexdigest()
    assert read["report_sha256"] in html


# --- segmentation --------------------------------------------------------------------

CT_SPECS = (
    CTPhantomSpec(slices=4, rows=48, columns=48, pixel_spacing_mm=7.5, seed=1),
    CTPhantomSpec(slices=4, rows=48, columns=48, pixel_spacing_mm=7.5, seed=2),
    CTPhantomSpec(slices=4, rows=48, columns=48, pixel_spacing_mm=7.5, seed=3,
                  slice_thickness_mm=1.0),
)  # fmt: skip
_CLASS_OF_TISSUE = {
    Tissue.AIR: 0,
    Tissue.FAT: 1,
    Tissue.SOFT_TISSUE: 2,
    Tissue.LIVER: 2,
    Tissue.BONE: 3,
}


def _truth_labels(spec: CTPhantomSpec) -> npt.NDArray[np.uint8]:
    anatomy = Anatomy(spec.grid)
    tissue = np.stack([anatomy.labels(i) for i in range(spec.slices)])
    lookup = np.zeros(len(Tissue), dtype=np.uint8)
    for t, c in _CLASS_OF_TISSUE.items():
        lookup[t] = c
    labels: npt.NDArray[np.uint8] = lookup[tissue]
    return labels


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return 2 * float(np.sum(a & b)) / float(np.sum(a) + np.sum(b))


def test_segmentation_dice_and_volumes_against_reference_segs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _models, pipelines = reference_definitions()
    segments = pipelines["ct-tissue-reference"].output.segments  # type: ignore[union-attr]
    specs = [s.spec() for s in segments]
    sheet = Workbook()
    table = sheet.active
    assert table is not None
    table.append(["item", "dicom", "reference_seg"])
    want: dict[str, dict[int, tuple[float, float]]] = {}
    for number, spec in enumerate(CT_SPECS, start=1):
        item = f"{number:04d}"
        series = write_ct_phantom(tmp_path / "series" / item, spec)
        truth = _truth_labels(spec)
        reference = truth.copy()
        if number == 2:  # the reader missed the bone of the first slice: soft tissue
            reference[0][reference[0] == 3] = 2
        sources = [pydicom.dcmread(p) for p in series.paths]
        seg = write_seg(sources, reference, specs, AlgorithmInfo("reader", "1"), series_number=99)
        assert seg is not None
        seg.save_as(tmp_path / f"reference_{item}.dcm")
        table.append([item, f"series/{item}", f"reference_{item}.dcm"])
        voxel_ml = spec.pixel_spacing_mm**2 * spec.slice_thickness_mm / 1000
        want[item] = {
            label: (
                _dice(truth == label, reference == label),
                float(np.sum(truth == label) - np.sum(reference == label)) * voxel_ml,
            )
            for label in (1, 2, 3)
        }
    table.append(["0004", "series/0004", ""])  # no reference yet: skipped
    sheet.save(tmp_path / "manifest.xlsx")
    assert want["0002"][3][0] < 0.99  # the wrong reference shows, or the test proves nothing

    code = main(
        [
            "evaluate",
            "--pipeline", "ct-tissue-reference",
            "--manifest", str(tmp_path / "manifest.xlsx"),
            "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report = read_report(tmp_path / "out" / "report.json")
    assert report["task"] == "segmentation" and report["classification"] is None
    assert report["dataset"]["evaluated"] == 3 and report["dataset"]["skipped_unlabelled"] == 1
    for row in report["items"]:
        assert row["error"] is None, row
        for segment in row["segments"]:
            dice, difference = want[row["item"]][segment["label"]]
            assert segment["dice"] == pytest.approx(dice), (row["item"], segment["name"])
            assert segment["difference_ml"] == pytest.approx(difference, abs=1e-6)
    bone = next(s for s in report["segmentation"]["segments"] if s["name"] == "Bone")
    assert bone["dice"]["mean"] == pytest.approx(np.mean([w[3][0] for w in want.values()]))
    assert bone["dice"]["min"] == pytest.approx(want["0002"][3][0])
    assert report["segmentation"]["segments"][0]["dice"]["mean"] == pytest.approx(1.0)
    thin = report["subgroups"]["SliceThicknessBand"]["≤1.5 mm"]
    assert thin["items"] == 1 and thin["segments"][2]["dice"]["mean"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "report.html").is_file()
    assert "Bone: Dice" in stdout


# --- mistakes ------------------------------------------------------------------------


def _manifest(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_usage_errors_exit_2_naming_the_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.csv"
    assert main(["evaluate", "--pipeline", "pet-suv-reference", "--manifest", str(missing)]) == 2
    assert "nothing.csv" in capsys.readouterr().err

    manifest = _manifest(tmp_path / "m.csv", "item,folder,label", "1,a,1")
    code = main(["evaluate", "--pipeline", "ct-tissue-reference", "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2 and "m.csv" in err and "'dicom'" in err and "'reference_seg'" not in err

    code = main(["evaluate", "--pipeline", "no-such", "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2 and "'no-such'" in err and "ct-tissue-reference" in err

    bad = _manifest(tmp_path / "bad.csv", "item,dicom,label", "1,a,maybe")
    (tmp_path / "config.yaml").write_text(CONFIG)
    args = ["evaluate", "--pipeline", "uptake", "--config", str(tmp_path / "config.yaml")]
    assert main([*args, "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv: row 2: column 'label'" in err and "'maybe'" in err

    assert main([*args, "--manifest", str(bad), "--finding", "Cat"]) == 2
    assert "no finding 'Cat'" in capsys.readouterr().err


def test_no_item_evaluated_exits_1_with_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    manifest = _manifest(tmp_path / "m.csv", "item,dicom,label", "<b>1</b>,gone,1", "2,also-gone,0")
    code = main(
        [
            "evaluate",
            "--pipeline", "uptake",
            "--config", str(tmp_path / "config.yaml"),
            "--manifest", str(manifest),
            "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 1
    assert "no item" in capsys.readouterr().err
    report = read_report(tmp_path / "out" / "report.json")
    assert report["dataset"]["failed"] == 2 and report["classification"]["auc"] is None
    html = (tmp_path / "out" / "report.html").read_text()
    assert "&lt;b&gt;1&lt;/b&gt;" in html and "<b>1</b>" not in html  # every value escaped


def test_read_report_refuses_what_is_not_an_evaluation_report(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something-else", "version": 1}))
    with pytest.raises(ConfigError, match=r"other\.json: not an evaluation report"):
        read_report(other)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"kind": "dicomnode-evaluation", "version": 2}))
    with pytest.raises(ConfigError, match="version 2"):
        read_report(newer)
