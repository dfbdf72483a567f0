"""``/api/shadow``: models in shadow mode, compared with the live model and with labels.

``GET`` and ``POST /compare`` (labels sent as CSV text; viewers may) give the report
``dicomnode shadow report`` prints (:mod:`dicomnode.datasets.shadow_report`).
``POST /{rule}/end`` takes a rule out of shadow mode on an evaluation report of the
model it runs now (:mod:`dicomnode.admin.shadow_end`): admins only, audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dicomnode.admin.auth import VIEWERS_MAY, actor_of, audit_detail
from dicomnode.admin.context import Context
from dicomnode.admin.rulefiles import VersionConflict
from dicomnode.admin.schemas import CHANGE_REFUSALS, ErrorOut
from dicomnode.admin.shadow_end import RuleNotFound, ShadowEndRefused, end_shadow
from dicomnode.datasets.shadow_labels import labels_from_csv
from dicomnode.datasets.shadow_report import accession_reader, shadow_report
from dicomnode.errors import ConfigError
from dicomnode.logs import get_logger
from dicomnode.rules import RulesError

log = get_logger(__name__)
router = APIRouter(prefix="/api/shadow", tags=["shadow"])


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Unprocessable(_Body):
    """A sentence; for a request malformed in itself, FastAPI's validation errors."""

    detail: str | list[dict[str, Any]]


class CompareIn(_Body):
    labels: str = Field(description="CSV text: an identifying column and a label column")
    label_column: str = "label"
    pipeline: str | None = None
    finding: str | None = None


class EndIn(_Body):
    report: str | None = Field(None, description="path of report.json on the node")
    report_content: dict[str, Any] | str | None = Field(
        None, description="the report itself (its JSON text, or the object)"
    )

    @model_validator(mode="after")
    def _one(self) -> EndIn:
        if (self.report is None) == (self.report_content is None):
            raise ValueError("give report (a path) or report_content, not both")
        return self


class EndOut(_Body):
    rule: str
    file: str
    version: str
    audit_id: int
    report_sha256: str
    model_sha256: str


@router.get("", summary="Shadow jobs, each beside the live model's result")
def get_shadow(
    context: Context,
    pipeline: Annotated[str | None, Query(max_length=64)] = None,
    finding: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    report = shadow_report(context.services.database, pipeline=pipeline, finding=finding)
    return report.as_dict()


@router.post(
    "/compare",
    summary="The shadow report compared with labels (CSV text); changes nothing",
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON"},
        422: {"model": Unprocessable, "description": "The labels cannot be read"},
    },
    openapi_extra=VIEWERS_MAY,
)
def compare(context: Context, body: CompareIn) -> dict[str, Any]:
    services = context.services
    try:
        labels = labels_from_csv(body.labels, "labels.csv", body.label_column)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    report = shadow_report(
        services.database,
        pipeline=body.pipeline,
        finding=body.finding,
        labels=labels,
        accession_of=accession_reader(services.index, services.spool),
    )
    return report.as_dict()


@router.post(
    "/{rule}/end",
    summary="End a rule's shadow mode on an evaluation report (audited)",
    response_model=EndOut,
    responses={
        **CHANGE_REFUSALS,
        400: {"model": ErrorOut, "description": "The body is not JSON"},
        404: {"model": ErrorOut, "description": "No such rule, or no such report file"},
        409: {
            "model": ErrorOut,
            "description": "The report does not fit (another model or pipeline), the rule "
            "is not in shadow, or the rules changed meanwhile; nothing was written",
        },
        422: {"model": Unprocessable, "description": "The rewritten rules would not be valid"},
        503: {"model": ErrorOut, "description": "This node cannot hash its models"},
    },
)
def end(
    context: Context,
    request: Request,
    rule: Annotated[str, PathParam(max_length=64)],
    body: EndIn,
) -> EndOut | JSONResponse:
    services = context.services
    if services.provenance is None:
        raise HTTPException(503, "this node cannot tell which model its pipelines run")
    content = _report_bytes(body)
    actor = actor_of(request)
    try:
        ended = end_shadow(
            context.rule_files,
            context.audit,
            rule,
            content,
            body.report,
            services.provenance,
            actor=actor,
            at=services.clock(),
            extra=audit_detail(request),
        )
    except RuleNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (ShadowEndRefused, VersionConflict) as exc:
        log.info("shadow_end_refused", rule=rule, actor=actor, reason=str(exc))
        raise HTTPException(409, str(exc)) from exc
    except RulesError as exc:
        raise HTTPException(422, str(exc)) from exc
    services.rules.refresh()
    log.info("shadow_ended", rule=rule, actor=actor, audit_id=ended.audit_id)
    return EndOut(
        rule=ended.rule,
        file=ended.file,
        version=ended.version,
        audit_id=ended.audit_id,
        report_sha256=ended.detail["report_sha256"],
        model_sha256=ended.detail["model_sha256"],
    )


def _report_bytes(body: EndIn) -> bytes:
    if body.report is not None:
        try:
            return Path(body.report).read_bytes()
        except OSError as exc:
            raise HTTPException(404, f"{body.report}: {exc.strerror}") from exc
        except ValueError as exc:  # a NUL in the path
            raise HTTPException(404, f"{body.report!r} is not a file name") from exc
    if isinstance(body.report_content, str):
        return body.report_content.encode("utf-8")
    return json.dumps(body.report_content).encode("utf-8")
