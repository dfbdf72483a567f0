"""The pynetdicom adaptations are written for one version; the pin and the install agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pynetdicom

from dicomnode.dicom import adapt

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pin() -> str:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    (spec,) = (s for s in project["dependencies"] if s.lower().startswith("pynetdicom"))
    name, equals, version = spec.partition("==")
    assert equals and name.strip().lower() == "pynetdicom", (
        f"pynetdicom must be pinned exactly (its internals are adapted), not {spec!r}"
    )
    assert not any(c in version for c in ",;<>=!~*"), spec
    return version.strip()


def test_the_installed_pynetdicom_is_the_one_the_adaptations_were_written_for() -> None:
    assert pynetdicom.__version__ == adapt.SUPPORTED, (
        f"pynetdicom {pynetdicom.__version__} is installed; dicomnode.dicom.adapt copies "
        f"{adapt.SUPPORTED}'s internals: re-read them against the new version, then bump SUPPORTED"
    )


def test_pyproject_pins_the_version_the_adaptations_were_written_for() -> None:
    assert _pin() == adapt.SUPPORTED
