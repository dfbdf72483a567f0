"""What the node holds, from the command line: series, jobs, and retrying failed jobs.

Jobs are named as the admin API and the web page name them: ``pipeline-12`` is pipeline
job 12 and ``send-7`` is outbox send 7 (the two queues number independently); a bare
number is a send, as it was before pipeline jobs were listed here. A completed series
version whose routing failed is listed as ``route-N`` (N: its completion entry), with
its reason, and ``dicomnode retry route-N`` routes it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from dicomnode.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    config_option,
    existing_index,
    moment,
)

PIPELINE_STATES = ("pending", "running", "done", "failed", "cancelled")
SEND_STATES = ("pending", "sending", "done", "failed")
ROUTE_STATES = ("retrying", "failed")
SERIES_STATES = ("receiving", "complete")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = sub.add_parser("jobs", help="list pipeline jobs and sends (newest first)")
    config_option(jobs)
    jobs.add_argument("--kind", choices=["pipeline", "send", "route"], help="only this kind")
    jobs.add_argument(
        "--state",
        choices=sorted({*PIPELINE_STATES, *SEND_STATES, *ROUTE_STATES}),
        help="only this state",
    )
    jobs.add_argument("--json", action="store_true", help="machine-readable output")
    jobs.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    jobs.set_defaults(run=jobs_command)

    retry = sub.add_parser(
        "retry",
        help="requeue a failed job now: send-N (its maximum age restarts), pipeline-N or "
        "route-N (a series version whose routing failed)",
    )
    config_option(retry)
    retry.add_argument(
        "job_id", help="the id shown by 'dicomnode jobs' (send-7, pipeline-12, route-3)"
    )
    retry.set_defaults(run=retry_command)

    series = sub.add_parser("series", help="list received series")
    config_option(series)
    series.add_argument("--json", action="store_true", help="machine-readable output")
    series.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    series.add_argument(
        "--state", choices=SERIES_STATES, help="only series in this state (receiving: still open)"
    )
    series.add_argument("--modality", help="only this modality (CT, PT, SEG ...)")
    series.add_argument(
        "--since",
        type=moment,
        metavar="TIME",
        help="only series whose last instance came at or after TIME (ISO 8601, e.g. 2026-12-07 "
        "or 2026-12-07T14:00; local time unless it says otherwise)",
    )
    series.set_defaults(run=series_command)


def series_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.routing.queue import RoutingQueue
    from dicomnode.store.index import Index

    config = load_config(args.config)
    index = Index(existing_index(config))
    try:
        index.open()
        filtered = args.state or args.modality or args.since
        rows = index.list_series(limit=2**31 - 1 if filtered else args.limit)
        rows = [row for row in rows if _wanted(row, args)][: args.limit]
        routing = RoutingQueue(index.database).statuses([row.id for row in rows])
        decided = _latest_rules(index.database, {row.id for row in rows})
    finally:
        index.close()
    if args.json:
        listed = []
        for row in rows:
            status = routing.get(row.id)
            listed.append(
                {
                    **as_json(row),
                    "routing_state": status.state if status else None,
                    "routing_error": status.error if status else None,
                    "routing_rules": decided.get(row.id),  # [] when unrouted
                }
            )
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    header = (
        "series UID",
        "modality",
        "description",
        "instances",
        "version",
        "state",
        "routing",
        "rejected",
        "last",
    )
    lines = [
        (
            row.series_uid,
            row.modality or "",
            row.description or "",
            str(row.instance_count),
            str(row.version),
            row.state,
            _routing_text(routing.get(row.id), decided.get(row.id)),
            str(row.rejected_count) if row.rejected_count else "",
            row.last_arrival_at.isoformat(timespec="seconds"),
        )
        for row in rows
    ]
    console = Console()
    if not console.is_terminal:
        # Piped into grep or a file: whole lines, tab-separated, never wrapped.
        for line in (header, *lines):
            print("\t".join(line))
        return EXIT_OK
    table = Table(title=f"{len(rows)} series")
    for column in header:
        table.add_column(column, overflow="fold")
    for line in lines:
        table.add_row(*line)
    console.print(table)
    return EXIT_OK


def _wanted(row: Any, args: argparse.Namespace) -> bool:
    if args.state is not None and row.state != args.state:
        return False
    if args.modality is not None and (row.modality or "").upper() != args.modality.upper():
        return False
    return args.since is None or row.last_arrival_at >= args.since


def _routing_text(status: Any, rules: list[str] | None) -> str:
    """The rules that matched, ``unrouted``, ``waiting``, or ``failed: <reason>`` /
    ``retrying: <reason>`` (the latest completed version's)."""
    if status is None:
        return ""
    if status.state in ROUTE_STATES:
        return f"{status.state}: {status.error or ''}"
    if status.state == "routed" and rules is not None:
        return ", ".join(rules) if rules else "unrouted"
    return str(status.state)


def _latest_rules(database: Any, ids: set[int]) -> dict[int, list[str]]:
    """Series id -> the rules its latest decided version matched ([]: unrouted)."""
    from sqlalchemy import func, select

    from dicomnode.store.tables import RoutingDecisionRow as Row

    if not ids:
        return {}
    latest = select(func.max(Row.id)).where(Row.series_id.in_(ids)).group_by(Row.series_id)
    with database.reading() as session:
        rows = session.scalars(select(Row).where(Row.id.in_(latest)))
        return {
            row.series_id: [] if row.unrouted else list(row.decision.get("matched_rules", []))
            for row in rows
        }


def as_json(row: object) -> dict[str, object]:
    """A summary dataclass (series, job, send) as JSON-ready values."""
    from dataclasses import asdict

    data = asdict(row)  # type: ignore[call-overload]
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def jobs_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.outbox.queue import OutboxQueue
    from dicomnode.pipeline.jobs import JobQueue
    from dicomnode.routing.queue import RoutingQueue
    from dicomnode.store.database import Database

    database = Database(existing_index(load_config(args.config)))
    rows: list[tuple[str, Any]] = []
    try:
        database.create_schema()
        if args.kind in (None, "pipeline") and args.state in (None, *PIPELINE_STATES):
            rows += [("pipeline", j) for j in JobQueue(database).list_jobs(args.state, args.limit)]
        if args.kind in (None, "send") and args.state in (None, *SEND_STATES):
            rows += [("send", s) for s in OutboxQueue(database).list_sends(args.state, args.limit)]
        if args.kind in (None, "route") and args.state in (None, *ROUTE_STATES):
            rows += [
                ("route", f)
                for f in RoutingQueue(database).failures(args.limit)
                if args.state in (None, f.state)
            ]
        rows.sort(key=lambda row: (_created(row[1]), row[0]), reverse=True)
        rows = rows[: args.limit]
        names = _series_names(database, {job.series_id for _kind, job in rows})
    finally:
        database.close()
    if args.json:
        listed = [
            {**as_json(job), "id": f"{kind}-{_number(job)}", "kind": kind, "number": _number(job)}
            for kind, job in rows
        ]
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    header = ("id", "kind", "what", "series", "state", "progress", "attempts", "problem")
    print("\t".join(header))
    for kind, job in rows:
        if kind == "route":
            print("\t".join(_route_line(job, names)))
            continue
        if kind == "send":
            what, progress, problem = (
                job.destination,
                f"{job.sent_count}/{job.instance_count}"
                + (f" commitment:{job.commitment}" if job.commitment else ""),
                job.reason,
            )
        else:
            what, progress, problem = job.pipeline, "", job.error or _flagged(job.timeline)
        line = (
            f"{kind}-{job.id}",
            kind,
            what,
            _series_text(names, job.series_id, job.series_version),
            job.state,
            progress,
            str(job.attempts),
            problem or "",
        )
        print("\t".join(line))
    return EXIT_OK


def _flagged(timeline: dict[str, Any]) -> str:
    """A done job that ran outside its model's input envelope says so (docs/envelopes.md)."""
    envelope = timeline.get("envelope") or {}
    if not envelope.get("outside"):
        return ""
    reasons = "; ".join(str(r) for r in envelope["outside"])
    return f"flagged: outside the input envelope of model {envelope.get('model')!r}: {reasons}"


def _series_names(database: Any, ids: set[int]) -> dict[int, tuple[str, str]]:
    """Series id -> (UID, description): what ``dicomnode series`` shows of it."""
    from sqlalchemy import select

    from dicomnode.store.tables import SeriesRow

    if not ids:
        return {}
    with database.reading() as session:
        rows = session.execute(
            select(SeriesRow.id, SeriesRow.series_uid, SeriesRow.description).where(
                SeriesRow.id.in_(ids)
            )
        )
        return {row.id: (row.series_uid, row.description or "") for row in rows}


def _series_text(names: dict[int, tuple[str, str]], series_id: int, version: int) -> str:
    """``…3.4567.89 CT ABDOMEN`` (the UID's end, as ``series`` lists it; ``v2`` after a
    series was reopened)."""
    uid, description = names.get(series_id, (f"series {series_id}", ""))
    short = uid if len(uid) <= 20 else "…" + uid[-19:]
    text = f"{short} {description}".strip()
    return text if version == 1 else f"{text} v{version}"


def _route_line(failure: Any, names: dict[int, tuple[str, str]]) -> tuple[str, ...]:
    after = failure.next_attempt_at
    what = (
        "routing" if after is None else f"routing (next try {after.isoformat(timespec='seconds')})"
    )
    return (
        f"route-{failure.entry_id}",
        "route",
        what,
        _series_text(names, failure.series_id, failure.version),
        failure.state,
        "",
        str(failure.failures),
        failure.error,
    )


def _created(job: Any) -> datetime:
    created: datetime = job.completed_at if hasattr(job, "entry_id") else job.created_at
    return created


def _number(job: Any) -> int:
    return int(job.entry_id if hasattr(job, "entry_id") else job.id)


def retry_command(args: argparse.Namespace) -> int:
    import getpass

    from dicomnode.admin import AuditLog
    from dicomnode.config import load_config
    from dicomnode.outbox.queue import OutboxQueue
    from dicomnode.pipeline.jobs import JobQueue
    from dicomnode.routing.queue import RoutingQueue
    from dicomnode.store.completion import utc_now
    from dicomnode.store.database import Database

    text = args.job_id.strip()
    kind, _, number = text.rpartition("-") if "-" in text else ("send", "", text)
    if kind not in ("pipeline", "send", "route") or not number.isdigit():
        print(
            f"dicomnode: {text!r} is not a job id such as send-7 or pipeline-12 "
            "(or route-3, a series version whose routing failed)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    job_id = f"{kind}-{int(number)}"
    database = Database(existing_index(load_config(args.config)))
    try:
        database.create_schema()
        retried: Any
        if kind == "send":
            sends = OutboxQueue(database)
            before: Any = sends.get(int(number))
            retried = sends.retry(int(number), utc_now())
            current: Any = sends.get(int(number))
            previous_reason = before.reason if before else None
        elif kind == "route":
            routing = RoutingQueue(database)
            before = routing.failure_of(int(number))
            retried = before if routing.retry_entry(int(number)) else None
            current = routing.failure_of(int(number))
            previous_reason = before.error if before else None
        else:
            jobs = JobQueue(database)
            before = jobs.get(int(number))
            retried = jobs.retry(int(number))
            current = jobs.get(int(number))
            previous_reason = before.error if before else None
        if retried is not None:
            # Every change made through the CLI or the API is in the audit trail.
            AuditLog(database).record(
                utc_now(),
                f"{getpass.getuser()} (cli)",
                "job.retry",
                job_id,
                {"previous_state": "failed", "previous_reason": previous_reason},
            )
    finally:
        database.close()
    if retried is None:
        state = "does not exist" if current is None else f"is {current.state}, not failed"
        print(f"dicomnode: job {job_id} {state}: nothing to retry", file=sys.stderr)
        return EXIT_FAILED
    if kind == "route":
        where = f"for routing (series {retried.series_uid} version {retried.version})"
    else:
        where = f"to {retried.destination}" if kind == "send" else f"for {retried.pipeline}"
    print(f"job {job_id}: requeued {where} (the running node takes it within seconds)")
    return EXIT_OK
