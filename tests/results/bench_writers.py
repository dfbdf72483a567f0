"""Time the SEG and SR writers on a synthetic 300-slice 512x512 CT (a script, not a test).

    .venv/bin/python tests/results/bench_writers.py [--slices 300] [--size 512]

The label map is the phantom's own tissue labels (fat, soft tissue, liver, bone), so the
SEG has one frame per slice per tissue present, as the ct-tissue-reference pipeline's
would. Sources are read without pixel data, as the node hands them to the writers.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from dicomnode.phantom import CTPhantomSpec, write_ct_phantom
from dicomnode.phantom.anatomy import Anatomy
from dicomnode.results import codes
from dicomnode.results.content import (
    AlgorithmInfo,
    Measurement,
    SegmentMeasurements,
    SegmentSpec,
)
from dicomnode.results.files import save
from dicomnode.results.seg import write_seg
from dicomnode.results.sr import write_sr

SEGMENTS = (
    SegmentSpec(1, "Fat", codes.TISSUE, codes.FAT),
    SegmentSpec(2, "Soft tissue", codes.TISSUE, codes.SOFT_TISSUE),
    SegmentSpec(3, "Liver", codes.ANATOMICAL_STRUCTURE, codes.Code("10200004", "SCT", "Liver")),
    SegmentSpec(4, "Bone", codes.TISSUE, codes.BONE),
)
ALGORITHM = AlgorithmInfo("ct-tissue-reference", "1.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--single", action="store_true", help="soft tissue only: one frame per slice"
    )
    args = parser.parse_args()
    segments = SEGMENTS[1:2] if args.single else SEGMENTS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = CTPhantomSpec(slices=args.slices, rows=args.size, columns=args.size)
        series = write_ct_phantom(folder / "ct", spec)
        sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.paths]
        anatomy = Anatomy(spec.grid)
        labels = np.stack([anatomy.labels(z) for z in range(spec.slices)])
        if args.single:
            labels = np.where(labels == 2, labels, 0).astype(np.uint8)
        measurements = [
            SegmentMeasurements(s.label, [Measurement.volume_ml(100.0), Measurement.mean_hu(0.0)])
            for s in segments
        ]
        print(f"{args.slices} slices of {args.size}x{args.size}, {len(segments)} labels")
        for run in range(1, args.repeat + 1):
            t0 = time.perf_counter()
            seg = write_seg(sources, labels, segments, ALGORITHM, series_number=900)
            t1 = time.perf_counter()
            assert seg is not None
            seg_path = save(seg, folder / "out")
            t2 = time.perf_counter()
            sr = write_sr(
                sources,
                seg,
                labels,
                segments,
                ALGORITHM,
                series_number=901,
                measurements=measurements,
            )
            t3 = time.perf_counter()
            sr_path = save(sr, folder / "out")
            t4 = time.perf_counter()
            print(
                f"run {run}: SEG build {t1 - t0:.2f} s, write {t2 - t1:.2f} s "
                f"({seg.NumberOfFrames} frames, {seg_path.stat().st_size / 1e6:.1f} MB); "
                f"SR build {t3 - t2:.2f} s, write {t4 - t3:.2f} s "
                f"({sr_path.stat().st_size / 1e6:.2f} MB)"
            )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
