"""Real files in every transfer syntax a sender may use, made by DCMTK and GDCM.

Each kind names the one command that produces its transfer syntax, so a test that
receives a kind receives what that tool writes, not what pydicom thinks it should be.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pydicom

from dicomnode.testing.executables import BIN
from dicomnode.testing.process import HarnessError

Codec = Literal[
    "jpeg-baseline",
    "jpeg-extended",
    "jpeg-lossless",
    "jpeg-lossless-sv1",
    "jpeg-ls",
    "jpeg-ls-near",
    "rle",
    "j2k",
    "j2k-lossy",
    "implicit-vr-le",
    "explicit-vr-be",
]

CODECS: dict[Codec, tuple[tuple[str, ...], str]] = {
    # kind: (program and options, transfer syntax it produces)
    "jpeg-baseline": (("dcmcjpeg", "+eb"), "1.2.840.10008.1.2.4.50"),  # 8 bits only
    "jpeg-extended": (("dcmcjpeg", "+ee"), "1.2.840.10008.1.2.4.51"),
    "jpeg-lossless": (("dcmcjpeg", "+el"), "1.2.840.10008.1.2.4.57"),
    "jpeg-lossless-sv1": (("dcmcjpeg", "+e1"), "1.2.840.10008.1.2.4.70"),
    "jpeg-ls": (("dcmcjpls", "+el"), "1.2.840.10008.1.2.4.80"),
    "jpeg-ls-near": (("dcmcjpls", "+en"), "1.2.840.10008.1.2.4.81"),
    "rle": (("dcmcrle",), "1.2.840.10008.1.2.5"),
    "j2k": (("gdcmconv", "--j2k"), "1.2.840.10008.1.2.4.90"),
    "j2k-lossy": (("gdcmconv", "--j2k", "--lossy", "-r", "10"), "1.2.840.10008.1.2.4.91"),
    # Uncompressed, but encoded differently from the Explicit VR Little Endian originals.
    "implicit-vr-le": (("dcmconv", "+ti"), "1.2.840.10008.1.2"),
    "explicit-vr-be": (("dcmconv", "+tb"), "1.2.840.10008.1.2.2"),  # retired, still sent
}
"""Lossy kinds get a new SOP Instance UID (the tools' default, as PS3.3 C.7.6.1.1.5
asks); lossless kinds keep it. ``jpeg-baseline`` turns 12-bit CT into 8 bits."""

LOSSY_CODECS: frozenset[Codec] = frozenset(
    {"jpeg-baseline", "jpeg-extended", "jpeg-ls-near", "j2k-lossy"}
)


def dcmtk_convert(src: Path, dst: Path, kind: Codec) -> str:
    """Transcode `src` into `dst`; returns the transfer syntax UID `dst` now has."""
    (program, *options), _expected = CODECS[kind]
    argv = [str(BIN / program), *options, str(src), str(dst)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not dst.is_file():
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return str(pydicom.dcmread(dst, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def convert_files(sources: Sequence[Path], folder: Path, kind: Codec) -> list[Path]:
    """Transcode each source into `folder` under its own name, in parallel; same order.

    Raises `HarnessError` if a tool fails or writes another syntax than `kind`'s.
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected = CODECS[kind][1]
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise HarnessError(f"sources share file names, they would overwrite each other: {names}")
    targets = [folder / name for name in names]

    def convert(pair: tuple[Path, Path]) -> None:
        syntax = dcmtk_convert(*pair, kind)
        if syntax != expected:
            raise HarnessError(f"{kind} wrote {pair[1]} as {syntax}, not {expected}")

    # Each conversion is its own process: threads only wait on them.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(convert, zip(sources, targets, strict=True)))
    return targets
