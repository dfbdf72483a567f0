"""Shadow mode from the command line: the report, and ending it on an evaluation report."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from dicomnode.cli.common import EXIT_OK, EXIT_USAGE, config_option, existing_index, print_help


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shadow = sub.add_parser(
        "shadow", help="models in shadow mode: compare them; end shadow mode (docs/shadow.md)"
    )
    shadow_sub = shadow.add_subparsers(title="shadow commands", metavar="COMMAND")
    report = shadow_sub.add_parser(
        "report",
        help="one row per series with a shadow job: its result beside the live model's "
        "and the labels so far",
    )
    config_option(report)
    report.add_argument("--pipeline", help="only this shadow pipeline")
    report.add_argument(
        "--labels",
        type=Path,
        help="CSV or XLSX: a SeriesInstanceUID, StudyInstanceUID or AccessionNumber column "
        "and a label column",
    )
    report.add_argument("--label-column", default="label", help="(default: label)")
    report.add_argument(
        "--finding", help="predicted positive when this finding is present (default: any)"
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument("--limit", type=int, default=1000, help="at most this many jobs")
    report.set_defaults(run=shadow_report_command)

    end = shadow_sub.add_parser(
        "end",
        help="take a rule out of shadow mode on an evaluation report of the model it "
        "runs now (rewrites its file, audited)",
    )
    config_option(end)
    end.add_argument("rule", help="the rule's name")
    end.add_argument("--report", type=Path, required=True, help="report.json of the evaluation")
    end.set_defaults(run=shadow_end_command)
    shadow.set_defaults(run=lambda _a: print_help(shadow))


def shadow_report_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.datasets.shadow_labels import read_labels
    from dicomnode.datasets.shadow_report import accession_reader, shadow_report
    from dicomnode.store.index import Index
    from dicomnode.store.spool import Spool

    config = load_config(args.config)
    labels = read_labels(args.labels, args.label_column) if args.labels else None
    index = Index(existing_index(config))
    try:
        index.open()
        spool = Spool(config.spool_path, config.spool_prefix)
        report = shadow_report(
            index.database,
            pipeline=args.pipeline,
            labels=labels,
            finding=args.finding,
            accession_of=accession_reader(index, spool),
            limit=args.limit,
        )
    finally:
        index.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(_text(report.as_dict()), end="")
    return EXIT_OK


def shadow_end_command(args: argparse.Namespace) -> int:
    from dicomnode.admin import AuditLog
    from dicomnode.admin.rulefiles import RuleFiles
    from dicomnode.admin.shadow_end import RuleNotFound, ShadowEndRefused, end_shadow
    from dicomnode.config import load_config
    from dicomnode.node import check_config
    from dicomnode.pipeline.engine import PipelineEngine
    from dicomnode.pipeline.findings import pipeline_findings
    from dicomnode.runners.host import ModelHost
    from dicomnode.store.completion import utc_now
    from dicomnode.store.database import Database

    config = load_config(args.config)
    checked = check_config(config, str(args.config or "configuration"))
    try:
        report = args.report.read_bytes()
    except OSError as exc:
        print(f"dicomnode: {args.report}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    pipelines = dict(checked.pipelines)
    engine = PipelineEngine(
        pipelines, ModelHost(checked.models, config.base_dir), config.pipeline_limits
    )
    rule_files = RuleFiles(
        config.rules_dir, tuple(config.destinations), pipeline_findings(pipelines)
    )
    database = Database(existing_index(config))
    try:
        database.create_schema()
        ended = end_shadow(
            rule_files,
            AuditLog(database),
            args.rule,
            report,
            str(args.report),
            lambda name: engine.provenance(name, None),
            actor=f"{getpass.getuser()} (cli)",
            at=utc_now(),
        )
    except (RuleNotFound, ShadowEndRefused) as exc:
        print(f"dicomnode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        database.close()
    detail = ended.detail
    print(
        f"{ended.rule}: shadow mode ended in {ended.file} (rules version "
        f"{ended.version[:12]}); audit entry {ended.audit_id}, report "
        f"{detail['report_sha256'][:12]}, model {detail['model_sha256'][:12]}"
    )
    return EXIT_OK


def _text(report: dict[str, Any]) -> str:
    rows = report["rows"]
    if not rows:
        return "No shadow jobs.\n"
    lines = []
    for row in rows:
        found = ", ".join(_finding(f) for f in row["findings"]) or "-"
        live = row["live"]
        if live is None:
            versus = "no live result"
        else:
            parts = [
                f"{a['name']} {'agree' if a['agree'] else 'DISAGREE'}"
                + (
                    f" ({a['volume_difference_ml']:+.1f} ml)"
                    if a["volume_difference_ml"] is not None
                    else ""
                )
                for a in live["findings"]
            ]
            versus = f"vs {live['pipeline']} (job {live['job_id']}): " + (", ".join(parts) or "-")
        label = {True: "positive", False: "negative", None: "-"}[row["label"]]
        sends = ", ".join(row["would_send_to"]) or "-"
        lines.append(
            f"{row['finished_at'] or row['state']}  {row['pipeline']} (rule {row['rule']}, "
            f"job {row['job_id']})  series {row['series_uid']} v{row['series_version']}\n"
            f"    shadow: {found}; would send to {sends}\n"
            f"    {versus}; label: {label}"
        )
    agreement = report["live_agreement"]
    lines.append(
        f"\n{len(rows)} shadow jobs; live model compared on {agreement['compared']}: "
        f"{agreement['agree']} agree, {agreement['disagree']} disagree"
    )
    confusion = report["confusion"]
    if confusion is not None:
        lines.append(
            f"labels ({report['labels_column']}): {confusion['labelled']} labelled, "
            f"{confusion['unlabelled']} not yet; TP {confusion['true_positive']} "
            f"FP {confusion['false_positive']} TN {confusion['true_negative']} "
            f"FN {confusion['false_negative']}; sensitivity {_pct(confusion['sensitivity'])}, "
            f"specificity {_pct(confusion['specificity'])}, PPV {_pct(confusion['ppv'])}"
        )
    return "\n".join(lines) + "\n"


def _finding(finding: dict[str, Any]) -> str:
    mark = "present" if finding["present"] else "absent"
    if finding["probability"] is not None:
        return f"{finding['name']} {mark} (p={finding['probability']:.2f})"
    if finding["volume_ml"] is not None:
        return f"{finding['name']} {finding['volume_ml']:.1f} ml"
    return f"{finding['name']} {mark}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
