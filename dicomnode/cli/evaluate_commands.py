"""``dicomnode evaluate``: a pipeline over a labelled set, and its report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicomnode.cli.common import EXIT_FAILED, EXIT_OK, config_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="run a pipeline over a labelled set; report AUC, sensitivity, Dice ... (HTML+JSON)",
        description="Run a pipeline over the series of a manifest (CSV or XLSX) and judge "
        "it against their labels (classification) or reference SEGs (segmentation). "
        "See docs/evaluation.md.",
    )
    evaluate.add_argument("--pipeline", required=True, metavar="NAME", help="pipeline to judge")
    evaluate.add_argument(
        "--manifest", required=True, type=Path, metavar="FILE", help="CSV or XLSX, one row a series"
    )
    config_option(evaluate)
    evaluate.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="report folder (default: evaluation-PIPELINE beside the manifest)",
    )  # fmt: skip
    evaluate.add_argument(
        "--path-column", default="dicom", metavar="NAME",
        help="column with each series' folder, relative to the manifest (default: dicom)",
    )  # fmt: skip
    evaluate.add_argument(
        "--label-column", default="label", metavar="NAME",
        help="column with 0/1 (or yes/no ...) labels, for classification (default: label)",
    )  # fmt: skip
    evaluate.add_argument(
        "--reference-seg-column", default=None, metavar="NAME",
        help="column with each row's reference SEG file, for segmentation "
        "(default: reference_seg)",
    )  # fmt: skip
    evaluate.add_argument(
        "--finding", default=None, metavar="NAME",
        help="the finding whose probability is the score (default: the pipeline's first)",
    )  # fmt: skip
    evaluate.add_argument(
        "--threshold", type=float, default=None, metavar="X",
        help="operating threshold (default: the finding's threshold in the pipeline)",
    )  # fmt: skip
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N",
        help="bootstrap resamples for the AUC's 95%% CI (default: 1000; 0: none)",
    )  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed")
    evaluate.set_defaults(run=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.datasets.evaluate import EvaluationRequest, evaluate
    from dicomnode.datasets.evaluation_report import write_report
    from dicomnode.errors import ConfigError
    from dicomnode.logs import configure_logging
    from dicomnode.pipeline.definition import all_definitions
    from dicomnode.pipeline.engine import PipelineEngine
    from dicomnode.runners import ModelHost

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap}: give 0 or more")
    if not args.manifest.is_file():
        raise ConfigError(f"{args.manifest}: no such manifest file")
    config = load_config(args.config)
    configure_logging("warning", "console")
    source = str(args.config or "built-in defaults")
    models, pipelines = all_definitions(config.models, config.pipelines, source)
    if args.pipeline not in pipelines:
        known = ", ".join(sorted(pipelines))
        raise ConfigError(f"{source}: no pipeline {args.pipeline!r} (pipelines: {known})")
    request = EvaluationRequest(
        pipeline=args.pipeline,
        manifest=args.manifest,
        path_column=args.path_column,
        label_column=args.label_column,
        reference_seg_column=args.reference_seg_column,
        finding=args.finding,
        threshold=args.threshold,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    # Only the pipeline's model: another model that fails to load must not stop this.
    used = {pipelines[args.pipeline].model: models[pipelines[args.pipeline].model]}
    with ModelHost(used, config.base_dir) as host:
        engine = PipelineEngine(pipelines, host, config.pipeline_limits)
        evaluation = evaluate(engine, request, progress=sys.stderr.isatty())
    if evaluation.evaluated == 0:
        print(f"dicomnode: no item of {args.manifest} could be evaluated", file=sys.stderr)
        for item in evaluation.items[:5]:
            print(f"  item {item.item}: {item.error}", file=sys.stderr)
    out = args.out or args.manifest.parent / f"evaluation-{args.pipeline}"
    files = write_report(evaluation, out)
    for line in _headline(evaluation):
        print(line)
    print(f"report: {files.html} ({files.json}, sha256 {files.sha256})")
    return EXIT_OK if evaluation.evaluated else EXIT_FAILED


def _headline(evaluation: Any) -> list[str]:
    failed = len(evaluation.items) - evaluation.evaluated
    lines = [
        f"{evaluation.request.pipeline}: {evaluation.evaluated} items evaluated, {failed} "
        f"failed, {evaluation.labelled_set.skipped} skipped (no label or reference)"
    ]
    c = evaluation.classification
    if c is not None:
        ci = c["auc_ci95"]
        auc = "—" if c["auc"] is None else f"{c['auc']:.3f}"
        if ci is not None:
            auc += f" (95% CI {ci['low']:.3f}-{ci['high']:.3f})"
        ratios = ", ".join(
            f"{name} {_ratio(c[key])}"
            for name, key in (
                ("sensitivity", "sensitivity"),
                ("specificity", "specificity"),
                ("PPV", "ppv"),
                ("NPV", "npv"),
            )
        )
        lines.append(f"{c['finding']}: AUC {auc}; at threshold {c['threshold']:g}: {ratios}")
    s = evaluation.segmentation
    if s is not None:
        for seg in s["segments"]:
            dice = seg["dice"]["mean"]
            diff = seg["difference_ml"]["mean"]
            lines.append(
                f"{seg['name']}: Dice {'—' if dice is None else f'{dice:.3f}'}, volume "
                f"difference {'—' if diff is None else f'{diff:+.2f}'} ml (mean of "
                f"{seg['dice']['n']})"
            )
    return lines


def _ratio(ratio: dict[str, Any]) -> str:
    value = "—" if ratio["value"] is None else f"{ratio['value']:.3f}"
    return f"{value} ({ratio['count']}/{ratio['of']})"
