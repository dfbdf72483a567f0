"""``dicomnode export`` end to end: selection, formats, manifest, resumption, mistakes."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from openpyxl import Workbook
from PIL import Image

from dicomnode.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from dicomnode.node import Node
from dicomnode.phantom import CTPhantomSpec, PETPhantomSpec, write_ct_phantom, write_pet_phantom
from dicomnode.pipeline.loading import load_series
from dicomnode.pipeline.steps import build_steps, parse_steps, run_steps
from dicomnode.testing.storescu import storescu

IMAGE_STEPS = [
    {"kind": "hu"},
    {"kind": "window", "center": 40, "width": 400, "output": "unit"},
    {"kind": "resize", "rows": 256, "columns": 256},
]


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _steps_file(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "steps.yaml"
    path.write_text(yaml.safe_dump({"steps": IMAGE_STEPS}), "utf-8")
    return path


def test_real_ct_exports_dicom_nifti_and_pngs_equal_to_the_pipeline_steps(
    tmp_path: Path, real_ct_dir: Path, real_ct_images: list[Path]
) -> None:
    out = tmp_path / "export"
    code = main(
        [
            "export",
            "--from",
            str(real_ct_dir),
            "--out",
            str(out),
            "--quiet",
            "--to",
            "dicom,nifti,png",
            "--steps",
            str(_steps_file(tmp_path)),
        ]
    )
    assert code == EXIT_OK
    [row] = _manifest(out)
    assert row["item"] == "0001" and row["modality"] == "CT"
    assert row["instances"] == str(len(real_ct_images)) and row["label"] == ""
    assert row["steps"] == "steps.yaml" and len(row["steps_sha256"]) == 64
    assert not list(out.glob("*.part"))

    # The pipeline's preprocessing, computed here on the original files.
    loaded = load_series(real_ct_images)
    prepared, _trace = run_steps(loaded.volume, build_steps(parse_steps(IMAGE_STEPS)))
    pngs = sorted((out / row["images"]).glob("*.png"))
    assert len(pngs) == prepared.shape[0]
    for k, png in enumerate(pngs):
        image = Image.open(png)
        assert image.mode == "L" and image.size == (256, 256)
        values = np.clip(prepared.array[k].astype(np.float64), 0.0, 1.0)
        expected = np.rint(values * 255).astype(np.uint8)
        assert np.array_equal(np.asarray(image), expected), png.name

    # The NIfTI is the preprocessed volume on the pipeline's grid (RAS: LPS with x, y negated);
    # tests/datasets/test_nifti.py checks that affine against pydicom's headers.
    nifti = nib.load(out / row["nifti"])
    assert nifti.shape == (256, 256, prepared.shape[0])
    lps_affine = prepared.geometry.affine()[:, [2, 1, 0, 3]]  # (x, y, z) voxel order
    assert np.allclose(nifti.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine, atol=1e-3)
    assert np.allclose(np.asarray(nifti.dataobj)[:, :, 3], prepared.array[3].T, atol=1e-4)

    # De-identified DICOM: every file, none keeps the patient's name or ID.
    original = pydicom.dcmread(real_ct_images[0], stop_before_pixels=True)
    files = sorted((out / row["dicom"]).glob("*.dcm"))
    assert len(files) == len(real_ct_images)
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PatientID == row["patient"] != original.PatientID
        assert str(ds.PatientName) == row["patient"]
        assert ds.SeriesInstanceUID == row["series"] != original.SeriesInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
    assert not (out / ".export" / "key").exists()  # finished: the key is gone


def _three_series(folder: Path) -> dict[str, str]:
    """Two CT series of one patient and a PET series of another; their series UIDs."""
    small = {"rows": 48, "columns": 48, "slices": 6, "pixel_spacing_mm": 6.0}
    first = write_ct_phantom(folder / "a", CTPhantomSpec(**small, seed=1))
    second = write_ct_phantom(
        folder / "b",
        CTPhantomSpec(**small, seed=2, series_number=2),
        study_instance_uid=first.study_instance_uid,
    )
    pet = write_pet_phantom(folder / "c", PETPhantomSpec(rows=32, columns=32, slices=8))
    return {
        "ct1": first.series_instance_uid,
        "ct2": second.series_instance_uid,
        "pet": pet.series_instance_uid,
    }


def test_a_spreadsheet_selects_exactly_its_series_and_one_patient_keeps_one_pseudonym(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    uids = _three_series(source)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Series Instance UID", "note"])
    sheet.append([uids["ct1"], "first"])
    sheet.append([uids["ct2"], "second"])
    sheet.append(["1.2.3.999", "a series that is not there"])
    listing = tmp_path / "studies.xlsx"
    book.save(listing)
    out = tmp_path / "export"
    assert (
        main(
            [
                "export",
                "--from",
                str(source),
                "--out",
                str(out),
                "--quiet",
                "--list",
                str(listing),
                "--to",
                "dicom",
            ]
        )
        == EXIT_OK
    )
    rows = _manifest(out)
    assert [r["modality"] for r in rows] == ["CT", "CT"]
    exported = {pydicom.dcmread(next((out / r["dicom"]).glob("*.dcm"))).SeriesNumber for r in rows}
    assert exported == {1, 2}
    assert rows[0]["patient"] == rows[1]["patient"]
    assert rows[0]["study"] == rows[1]["study"] and rows[0]["series"] != rows[1]["series"]


def test_where_conditions_select_by_typed_values(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _three_series(source)
    out = tmp_path / "pet"
    assert (
        main(
            [
                "export",
                "--from",
                str(source),
                "--out",
                str(out),
                "--quiet",
                "--to",
                "nifti",
                "--where",
                "Modality=PT",
                "--where",
                "SeriesDescription~(?i)pet",
            ]
        )
        == EXIT_OK
    )
    [row] = _manifest(out)
    assert row["modality"] == "PT" and row["dicom"] == ""
    image = nib.load(out / row["nifti"])
    assert image.shape == (32, 32, 8)
    out = tmp_path / "thin"
    assert (
        main(
            [
                "export",
                "--from",
                str(source),
                "--out",
                str(out),
                "--quiet",
                "--to",
                "dicom",
                "--where",
                "Modality=CT",
                "--where",
                "SeriesNumber<=1",
            ]
        )
        == EXIT_OK
    )
    assert len(_manifest(out)) == 1


def test_mistakes_in_conditions_steps_and_lists_are_usage_errors_that_name_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    _three_series(source)
    out = str(tmp_path / "out")
    assert (
        main(["export", "--from", str(source), "--out", out, "--where", "Modalty=CT"]) == EXIT_USAGE
    )
    assert "Modality" in capsys.readouterr().err  # the suggestion
    assert (
        main(["export", "--from", str(source), "--out", out, "--where", "SliceThickness>=thin"])
        == EXIT_USAGE
    )
    assert "SliceThickness" in capsys.readouterr().err
    assert main(["export", "--from", str(source), "--out", out, "--to", "png"]) == EXIT_USAGE
    assert "window" in capsys.readouterr().err  # 8-bit images need steps that end in 0..1
    bad = tmp_path / "list.csv"
    bad.write_text("Name,Date\nx,y\n", "utf-8")
    assert main(["export", "--from", str(source), "--out", out, "--list", str(bad)]) == EXIT_USAGE
    assert "AccessionNumber" in capsys.readouterr().err
    assert (
        main(["export", "--from", str(source), "--out", out, "--steps", "pipeline:nope"])
        == EXIT_USAGE
    )
    assert "ct-tissue-reference" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_an_interrupted_export_resumes_with_the_same_pseudonyms_and_a_failed_item_is_its_own(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    uids = _three_series(source)
    broken = sorted((source / "b").glob("*.dcm"))[2]
    good_bytes = broken.read_bytes()
    broken.write_bytes(good_bytes[:1000])  # a truncated file: this series fails
    out = tmp_path / "export"
    mapping = tmp_path / "mapping.csv"
    args = [
        "export",
        "--from",
        str(source),
        "--out",
        str(out),
        "--quiet",
        "--to",
        "dicom,nifti",
        "--mapping",
        str(mapping),
    ]
    assert main(args) == EXIT_FAILED
    first = _manifest(out)
    assert sorted(r["modality"] for r in first) == ["CT", "PT"]
    assert (out / ".export" / "key").exists()  # not finished: the key stays
    (out / "item-0009.part").mkdir()  # what a killed run leaves
    broken.write_bytes(good_bytes)
    assert main(args) == EXIT_OK
    rows = _manifest(out)
    assert rows[:2] == first  # untouched
    assert len(rows) == 3 and rows[2]["item"] == "0003"
    assert rows[2]["patient"] == next(r["patient"] for r in first if r["modality"] == "CT")
    assert not list(out.glob("*.part"))
    assert mapping.stat().st_mode & 0o777 == 0o600
    text = mapping.read_text("utf-8")
    assert uids["ct1"] in text and uids["ct2"] in text  # both runs' series
    # Finished without --keep-key: a later run cannot mint matching pseudonyms, so it refuses.
    assert main(args) == EXIT_USAGE


def test_export_from_the_node_storage(tmp_path: Path, node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    series = write_ct_phantom(
        tmp_path / "sent", CTPhantomSpec(rows=32, columns=32, slices=5, pixel_spacing_mm=8.0)
    )
    assert storescu(list(series.paths), ae_title="DICOMNODE", port=node.scp.port).returncode == 0
    config = tmp_path / "node.yaml"
    config.write_text(f"storage: {{path: {tmp_path / 'var'}}}\n", "utf-8")
    out = tmp_path / "export"
    assert (
        main(
            [
                "export",
                "--config",
                str(config),
                "--out",
                str(out),
                "--quiet",
                "--where",
                "Modality=CT",
                "--to",
                "nifti",
            ]
        )
        == EXIT_OK
    )
    [row] = _manifest(out)
    assert nib.load(out / row["nifti"]).shape == (32, 32, 5)


def test_a_dynamic_pet_series_exports_as_one_4d_nifti_with_its_frame_times(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    write_pet_phantom(
        source, PETPhantomSpec(rows=24, columns=24, pixel_spacing_mm=16.0, time_frames=3)
    )
    out = tmp_path / "export"
    assert main(["export", "--from", str(source), "--out", str(out), "--quiet",
                 "--to", "nifti", "--steps", "pipeline:pet-suv-reference"]) == EXIT_OK  # fmt: skip
    [row] = _manifest(out)
    image = nib.load(out / row["nifti"])
    assert image.shape == (24, 24, 40, 3)
    frames = np.asarray(image.dataobj)
    # SUV (the pipeline's step, computed before de-identification removes the weight):
    # lesions rise frame by frame in the phantom, the body stays near SUV 1.
    assert frames[..., 0].max() < frames[..., 2].max()
    timing = json.loads((out / row["item"].join(["item-", "/image.json"])).read_text("utf-8"))
    assert len(timing["FrameReferenceTime"]) == 3 and len(timing["FrameDuration"]) == 3


def test_steps_with_a_register_step_put_the_export_on_the_template_grid(tmp_path: Path) -> None:
    from dicomnode.datasets.nifti import save_nifti, to_nifti

    source = tmp_path / "source"
    small = CTPhantomSpec(
        rows=40, columns=40, slices=12, pixel_spacing_mm=9.0, slice_thickness_mm=6.0
    )
    series = write_ct_phantom(source, small)
    # The template: the phantom itself on a coarser grid (a relative path in the steps file).
    template = load_series(list(series.paths)).volume
    coarse, _ = run_steps(
        template, build_steps(parse_steps([{"kind": "resize", "rows": 30, "columns": 30}]))
    )
    save_nifti(to_nifti(coarse), tmp_path / "template.nii.gz")
    steps = tmp_path / "register.yaml"
    steps.write_text(
        "- {kind: hu}\n- {kind: register, template: template.nii.gz, iterations: 20}\n", "utf-8"
    )
    out = tmp_path / "export"
    assert main(["export", "--from", str(source), "--out", str(out), "--quiet",
                 "--to", "nifti", "--steps", str(steps)]) == EXIT_OK  # fmt: skip
    [row] = _manifest(out)
    assert nib.load(out / row["nifti"]).shape == (30, 30, 12)
