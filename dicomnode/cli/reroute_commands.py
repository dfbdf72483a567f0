"""``dicomnode reroute``: route stored series again by the rules in force now.

A series stored before the rule that wants it existed stays unrouted (sending it again
stores only duplicates). ``reroute`` queues its latest completed version for the
running node's router, which records a new decision saying it was re-routed and by whom
(docs/routing.md). ``--dry-run`` shows what the rules would do and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from dicomnode.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, config_option, moment

AUDIT_ACTION = "series.reroute"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reroute = sub.add_parser(
        "reroute",
        help="route stored series again by the rules in force now (audited)",
    )
    config_option(reroute)
    which = reroute.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--series",
        metavar="SERIES_UID",
        action="append",
        help="a stored series (repeat for several)",
    )
    which.add_argument(
        "--since",
        type=moment,
        metavar="TIME",
        help="every series completed at or after TIME (ISO 8601, e.g. 2026-12-07 or "
        "2026-12-07T14:00; local time unless it says otherwise, as `series --since`)",
    )
    reroute.add_argument(
        "--dry-run",
        action="store_true",
        help="print which rules would match each series now; change nothing",
    )
    reroute.set_defaults(run=reroute_command)


def reroute_command(args: argparse.Namespace) -> int:
    from dicomnode.config import load_config
    from dicomnode.store.index import Index

    since: datetime | None = args.since
    config = load_config(args.config)
    index = Index(config.database_url)
    try:
        index.open()
        if since is None:
            series = []
            for uid in dict.fromkeys(args.series):
                found = index.find_series(uid)
                if found is None:
                    print(f"dicomnode: no stored series with UID {uid}", file=sys.stderr)
                    return EXIT_USAGE
                series.append(found)
        else:
            series = _completed_since(index, since)
        if args.dry_run:
            return _dry_run(args, config, index, series)
        return _queue(index, series)
    finally:
        index.close()


def _completed_since(index: Any, since: datetime) -> list[Any]:
    """Stored series whose latest version completed at or after ``since``, oldest first."""
    from sqlalchemy import select

    from dicomnode.store.tables import SeriesRow

    with index.database.reading() as session:
        uids = list(
            session.scalars(
                select(SeriesRow.series_uid)
                .where(SeriesRow.completed_at.is_not(None), SeriesRow.completed_at >= since)
                .order_by(SeriesRow.completed_at, SeriesRow.id)
            )
        )
    return [s for s in (index.find_series(uid) for uid in uids) if s is not None]


def _dry_run(args: argparse.Namespace, config: Any, index: Any, series: list[Any]) -> int:
    """What the rules in force would do with each series now; nothing is written."""
    from dicomnode.cli.rules_commands import load_rules
    from dicomnode.routing.router import stored_series_attributes
    from dicomnode.rules import explain
    from dicomnode.rules.matching import evaluate
    from dicomnode.store.spool import Spool

    ruleset = load_rules(args, None)
    spool = Spool(config.spool_path, config.spool_prefix)
    print(f"dry run: rules version {ruleset.version[:12]}, {len(series)} series; nothing changed")
    for summary in series:
        attributes = stored_series_attributes(index, spool, summary.id, summary.version, ruleset)
        evaluation = evaluate(ruleset, attributes)
        decision = evaluation.decision
        matched = ", ".join(decision.matched_rules) or "none (it would stay unrouted)"
        print(f"\nseries {summary.series_uid} version {summary.version}: matches {matched}")
        print(explain(ruleset, attributes, evaluation), end="")
    return EXIT_OK


def _queue(index: Any, series: list[Any]) -> int:
    """Queue each series for the node's router; one audit entry per series queued."""
    import getpass

    from dicomnode.admin import AuditLog
    from dicomnode.routing.queue import RoutingQueue
    from dicomnode.store.completion import utc_now

    actor = f"{getpass.getuser()} (cli)"
    routing = RoutingQueue(index.database)
    audit = AuditLog(index.database)
    failed = 0
    for summary in series:
        queued = routing.reroute(summary.id, actor, utc_now())
        if queued.refused is not None:
            failed += 1
            print(
                f"dicomnode: series {summary.series_uid} cannot be routed again: {queued.refused}",
                file=sys.stderr,
            )
            continue
        audit.record(
            utc_now(), actor, AUDIT_ACTION, summary.series_uid, {"version": queued.version}
        )
        print(
            f"series {summary.series_uid} version {queued.version}: queued to be routed "
            "again (the running node routes it within seconds)"
        )
    if not series:
        print("no series to route again")
    return EXIT_FAILED if failed else EXIT_OK
