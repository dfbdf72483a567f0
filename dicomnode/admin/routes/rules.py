"""``/api/rules``: the rules in force, saving a rule file, and dry runs on stored series.

``/check`` validates a file without saving it (the web editor's inline errors). A save is
validated exactly as ``dicomnode rules check`` validates (the same problems,
each with file, line and key), written atomically, loaded at once and audited with who
made it. The rules history records versions as the live reload saw them come into
force; for versions saved here, the history names the API's actor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from dicomnode.admin.auth import VIEWERS_MAY, actor_of, audit_detail
from dicomnode.admin.context import AdminContext, Context
from dicomnode.admin.rulefiles import VersionConflict
from dicomnode.admin.schemas import (
    CHANGE_REFUSALS,
    ClauseOut,
    DryRunIn,
    DryRunOut,
    ErrorOut,
    FindingCheckOut,
    FindingRouteOut,
    PipelineRunOut,
    PlanOut,
    ProblemOut,
    RuleFileIn,
    RuleFileOut,
    RuleOut,
    RulesChecked,
    RulesCheckIn,
    RulesOut,
    RulesRefused,
    RulesSaved,
    RulesVersionOut,
    VerdictOut,
)
from dicomnode.logs import get_logger
from dicomnode.pipeline.findings import stored_findings
from dicomnode.routing.router import stored_series_attributes
from dicomnode.rules import PipelineRun, Rule, RulesError, evaluate, explain
from dicomnode.rules.findings import FindingValues, route_findings
from dicomnode.rules.model import describe

log = get_logger(__name__)
router = APIRouter(prefix="/api/rules", tags=["rules"])

_REFUSED: dict[int | str, dict[str, Any]] = {
    **CHANGE_REFUSALS,
    400: {"model": ErrorOut, "description": "The body is not JSON"},
    422: {
        "model": RulesRefused,
        "description": "The rules are not valid: every problem with file, line and key "
        "(or, for a malformed request, FastAPI's validation errors)",
    },
}
HISTORY_LIMIT = 20


@router.get("", summary="The rules in force: version, rules, files and history")
def get_rules(context: Context) -> RulesOut:
    services = context.services
    ruleset = services.rules.current
    history = services.rules.history(HISTORY_LIMIT)
    in_force = next((v.files for v in history if v.version == ruleset.version), None)
    if in_force is None:
        in_force = {path.name: _read(path) for path in ruleset.files}
    saved_by = _saved_by(context)
    return RulesOut(
        version=ruleset.version,
        rules=[_rule_out(rule) for rule in ruleset],
        files=[RuleFileOut(name=name, content=text) for name, text in sorted(in_force.items())],
        last_rejection=services.rules.last_rejection,
        history=[
            RulesVersionOut(
                version=v.version,
                loaded_at=v.loaded_at,
                actor=saved_by.get(v.version, v.actor),
                files=sorted(v.files),
            )
            for v in history
        ],
    )


@router.put(
    "",
    summary="Save a rule file: validated, written atomically, loaded, audited",
    response_model=RulesSaved,
    responses={
        **_REFUSED,
        409: {"model": ErrorOut, "description": "The folder no longer holds base_version"},
    },
)
def put_rule_file(
    context: Context, request: Request, body: RuleFileIn
) -> RulesSaved | JSONResponse:
    services = context.services
    actor = actor_of(request)
    previous = services.rules.current.version
    try:
        saved = context.rule_files.save(body.name, body.content, body.base_version)
    except RulesError as exc:
        log.info("rules_save_refused", file=body.name, actor=actor, problems=len(exc.problems))
        return _refused(exc)
    except VersionConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    ruleset = saved.ruleset
    audit_id = context.audit.record(
        services.clock(),
        actor,
        "rules.save",
        body.name,
        {
            "version": ruleset.version,
            "previous_version": previous,
            "content": body.content,
            "previous_content": saved.previous,
            **audit_detail(request),
        },
    )
    services.rules.refresh()
    in_force = services.rules.current.version == ruleset.version
    log.info("rules_saved", file=body.name, actor=actor, version=ruleset.version, loaded=in_force)
    return RulesSaved(name=body.name, version=ruleset.version, in_force=in_force, audit_id=audit_id)


@router.post(
    "/check",
    summary="Validate a rule file as it would be saved, without saving it",
    response_model=RulesChecked,
    responses=_REFUSED,
    openapi_extra=VIEWERS_MAY,
)
def check_rule_file(context: Context, body: RulesCheckIn) -> RulesChecked | JSONResponse:
    """What the editor calls while someone types: the same problems a save would give."""
    try:
        ruleset = context.rule_files.with_file(body.name, body.content)
    except RulesError as exc:
        return _refused(exc)
    return RulesChecked(name=body.name, version=ruleset.version, rules=len(ruleset))


@router.post(
    "/dry-run",
    summary="Which rules would match a stored series, and what would happen",
    response_model=DryRunOut,
    responses={
        **_REFUSED,
        404: {"model": ErrorOut, "description": "No series with this UID"},
    },
    openapi_extra=VIEWERS_MAY,
)
def dry_run(context: Context, body: DryRunIn) -> DryRunOut | JSONResponse:
    services = context.services
    series = services.index.find_series(body.series_uid)
    if series is None:
        raise HTTPException(404, f"no series with UID {body.series_uid}")
    try:
        if body.name is None:
            ruleset = context.rule_files.alone(body.content)
        else:
            ruleset = context.rule_files.with_file(body.name, body.content)
    except RulesError as exc:
        return _refused(exc)
    attributes = stored_series_attributes(
        services.index, services.spool, series.id, series.version, ruleset
    )
    evaluation = evaluate(ruleset, attributes)
    decision = evaluation.decision
    catalog = services.pipelines if isinstance(services.pipelines, Mapping) else {}
    findings = stored_findings(services.jobs, series.id, catalog)
    return DryRunOut(
        series_uid=series.series_uid,
        version=ruleset.version,
        verdicts=[
            VerdictOut(
                rule=v.rule.name,
                file=v.rule.file.name,
                line=v.rule.line,
                outcome=v.outcome.value,
                reason=None if v.failure is None else v.failure.reason,
                stopped_by=v.stopped_by,
            )
            for v in evaluation.verdicts
        ],
        decision=PlanOut(
            routed=decision.routed,
            matched_rules=list(decision.matched_rules),
            forward_to=list(decision.forward_to),
            pipeline_runs=[
                PipelineRunOut(
                    rule=r.rule,
                    pipeline=r.pipeline,
                    send_to=list(r.send_to),
                    on_findings=[route.name for route in r.on_findings],
                )
                for r in decision.pipeline_runs
            ],
        ),
        explain=explain(ruleset, attributes, evaluation, findings),
        findings_routes=_findings_routes(decision.pipeline_runs, findings),
    )


def _findings_routes(
    runs: Iterable[PipelineRun], findings: Mapping[str, FindingValues]
) -> list[FindingRouteOut]:
    routes = []
    for run in runs:
        values = findings.get(run.pipeline)
        if values is None or not run.on_findings:
            continue
        for verdict in route_findings(run.on_findings, values):
            routes.append(
                FindingRouteOut(
                    rule=run.rule,
                    entry=verdict.route.name,
                    fired=verdict.fired,
                    send_results_to=list(verdict.route.send_results_to),
                    forward_to=list(verdict.route.forward_to),
                    checks=[
                        FindingCheckOut(key=c.clause.keyword, holds=c.holds, text=c.text)
                        for c in verdict.checks
                    ],
                )
            )
    return routes


def _refused(exc: RulesError) -> JSONResponse:
    count = len(exc.problems)
    refused = RulesRefused(
        detail=f"{count} problem{'s' * (count != 1)}: the rules are not valid",
        problems=[
            ProblemOut(file=p.file.name, line=p.line, key=p.key, message=p.message)
            for p in exc.problems
        ],
    )
    return JSONResponse(refused.model_dump(mode="json"), status_code=422)


def _saved_by(context: AdminContext) -> dict[str, str]:
    """Rules versions saved through the API -> who saved them (the newest save wins)."""
    saved: dict[str, str] = {}
    for entry in context.audit.entries(action="rules.save", limit=HISTORY_LIMIT * 5):
        version = entry.detail.get("version")
        if isinstance(version, str):
            saved.setdefault(version, f"{entry.actor} (API)")
    return saved


def _rule_out(rule: Rule) -> RuleOut:
    return RuleOut(
        name=rule.name,
        file=rule.file.name,
        line=rule.line,
        enabled=rule.enabled,
        priority=rule.priority,
        stop=rule.stop,
        description=rule.description,
        match=[
            ClauseOut(keyword=c.keyword, condition=describe(c.condition), line=c.line)
            for c in rule.match
        ],
        pipeline=rule.pipeline,
        forward_to=list(rule.forward_to),
        send_to=list(rule.send_to),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
