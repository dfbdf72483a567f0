"""The API's request and response bodies: pydantic models, so the OpenAPI says the truth.

Responses are built from the stages' frozen dataclasses; nothing here touches the
database. Times are aware UTC datetimes (ISO 8601 with an offset on the wire). Job ids
carry their kind (``pipeline-12``, ``send-7``): the two queues number independently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JOB_ID_PATTERN = r"^(pipeline|send)-[1-9][0-9]{0,17}$"  # 18 digits stay below 2**63
RULE_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}\.ya?ml$"
MAX_RULE_FILE_CHARS = 256 * 1024

JobKind = Literal["pipeline", "send"]
JobState = Literal["pending", "running", "sending", "done", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- query parameters: unknown ones are refused (422), so a typo never silently lists all --


class SeriesQuery(_Model):
    state: Literal["receiving", "complete"] | None = None
    modality: Annotated[str | None, Field(max_length=16)] = None
    origin: Literal["received", "result"] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class JobsQuery(_Model):
    kind: JobKind | None = None
    state: JobState | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class DestinationsQuery(_Model):
    echo: bool = Field(default=True, description="C-ECHO each destination (up to 5 s each)")


class AuditQuery(_Model):
    action: Annotated[str | None, Field(max_length=64, examples=["rules.save"])] = None
    actor: Annotated[str | None, Field(max_length=128)] = None
    target: Annotated[str | None, Field(max_length=256)] = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class Health(_Model):
    status: Literal["ok"] = "ok"


class CheckOut(_Model):
    name: str
    ok: bool
    detail: str | None = None


class Readiness(_Model):
    ready: bool
    checks: list[CheckOut]


class NodeOut(_Model):
    ae_title: str
    dicom_port: int | None  # None when the listener is not up (yet), or node.port is null
    dicom_tls_port: int | None = None  # the DICOM-TLS listener's, when node.tls is set
    version: str  # dicomnode's own version
    started_at: datetime
    node_id: str = "local"  # its id in a cluster (node.id)
    roles: list[str] = []  # the stages it runs (node.roles)


class ClusterNodeOut(_Model):
    """One node process of the cluster, as its row in the database says."""

    id: str
    host: str
    pid: int
    version: str
    roles: list[str]
    started_at: datetime
    heartbeat_at: datetime  # it renews its leases with each heartbeat
    stopped_at: datetime | None  # a clean stop
    state: str  # up | lost (no heartbeat for a lease's length) | stopped
    leases: dict[str, int]  # units of work it holds now: sends, jobs, routing
    this_node: bool  # the node answering this request


class Overview(_Model):
    """What the dashboard shows first: the node, whether it is ready, and how much is where."""

    node: NodeOut
    readiness: Readiness
    rules_version: str
    rules_count: int
    rules_last_rejection: str | None
    series: dict[str, int]  # state -> count
    pipeline_jobs: dict[str, int]
    sends: dict[str, int]


class ErrorOut(_Model):
    detail: str


# What a request that changes something (or may: every method but GET) can also be
# answered, before its route runs (guards.py) or by its token's role (auth.py).
CHANGE_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorOut,
        "description": "The token's role (viewer) may not do this, or another site sent it",
    },
    413: {"model": ErrorOut, "description": "The body is larger than admin.max_body_bytes"},
    415: {"model": ErrorOut, "description": "The body is not declared application/json"},
}


# -- series -----------------------------------------------------------------------------


class SeriesOut(_Model):
    id: int
    study_uid: str
    series_uid: str
    modality: str | None
    description: str | None
    body_part: str | None
    instance_count: int
    version: int
    state: str  # receiving | complete
    origin: str  # received | result
    first_arrival_at: datetime
    last_arrival_at: datetime
    deadline_at: datetime | None
    completed_at: datetime | None
    # How routing stands for the latest completed version: routed | waiting | retrying |
    # failed (None while nothing completed); the reason of its last routing failure.
    routing_state: str | None = None
    routing_error: str | None = None
    rejected_count: int = 0  # instances withdrawn by IOCM rejection notes (docs/routing.md)


class InstanceOut(_Model):
    id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    series_version: int


class CompletionOut(_Model):
    version: int
    instance_count: int
    reason: str  # quiet | settle | max_wait
    completed_at: datetime
    consumed_at: datetime | None
    routing_state: str = "waiting"  # routed | waiting | retrying | failed
    routing_failures: int = 0
    routing_error: str | None = None
    next_attempt_at: datetime | None = None
    failed_at: datetime | None = None


class RoutingRetryOut(_Model):
    series_uid: str
    requeued: int  # series versions whose routing is tried again now


class RerouteOut(_Model):
    series_uid: str
    version: int  # the completed version queued to be routed again
    rules_version: str  # the rules in force when it was queued


class PipelineRunOut(_Model):
    rule: str
    pipeline: str
    send_to: list[str]
    on_findings: list[str] = []  # the rule's on_findings entries, run when the job is done


class DecisionOut(_Model):
    version: int
    rules_version: str
    decided_at: datetime
    unrouted: bool
    matched_rules: list[str]
    forward_to: list[str]
    pipeline_runs: list[PipelineRunOut]
    # IOCM (docs/routing.md): a rejection note's handling, or a rejected series' withholding.
    rejection_note: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    # Routing again (docs/routing.md): an operator re-routed this version; by whom, and
    # the decisions this one replaced (oldest first).
    rerouted: bool | None = None
    rerouted_by: str | None = None
    replaced: list[dict[str, Any]] | None = None


# -- jobs -------------------------------------------------------------------------------


class PipelineJobOut(_Model):
    kind: Literal["pipeline"] = "pipeline"
    id: str
    number: int
    series_id: int
    series_uid: str | None
    series_version: int
    rule: str
    pipeline: str
    send_to: list[str]  # for a shadow job: where its results would have gone
    state: str  # pending | running | done | failed | cancelled
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    shadow: bool = False  # results kept, nothing sent (docs/shadow.md)


class SendJobOut(_Model):
    kind: Literal["send"] = "send"
    id: str
    number: int
    series_id: int
    series_uid: str | None
    series_version: int
    destination: str
    origin: str  # rule:<name> or job:<number>
    state: str  # pending | sending | done | failed
    reason: str | None
    attempts: int
    instance_count: int
    sent_count: int
    # storage commitment: null (not asked) | requested | committed | failed | timed_out |
    # unrequested
    commitment: str | None = None
    created_at: datetime
    next_attempt_at: datetime
    finished_at: datetime | None


JobOut = Annotated[PipelineJobOut | SendJobOut, Field(discriminator="kind")]


class SeriesDetail(_Model):
    series: SeriesOut
    instances: list[InstanceOut]
    completions: list[CompletionOut]
    decisions: list[DecisionOut]
    jobs: list[JobOut]  # its pipeline jobs, its sends and the sends of those jobs' results


class ReceivedOut(_Model):
    first_at: datetime
    last_at: datetime
    instance_count: int


class CompletedOut(_Model):
    at: datetime
    reason: str


class RoutedOut(_Model):
    at: datetime
    rules_version: str
    matched_rules: list[str]


class StageOut(_Model):
    stage: str
    seconds: float
    failed: bool = False  # the stage a failed job failed in


class AttemptOut(_Model):
    started_at: datetime
    ended_at: datetime
    outcome: str  # delivered | temporary | permanent
    status: int | None  # the last DIMSE status of the attempt, if any came back
    status_hex: str | None
    status_name: str | None
    detail: str
    sent: int


class SendTimelineOut(_Model):
    id: str
    destination: str
    state: str
    attempts: list[AttemptOut]


class ResultOut(_Model):
    modality: str
    series_uid: str


class Timeline(_Model):
    """From the source series' arrival to the last send attempt.

    ``queued_at``, ``started_at`` and ``finished_at`` are the job's own (for a send, its
    first attempt starts it); ``stages`` are the pipeline's, also for a send of its results.
    """

    series_uid: str | None
    received: ReceivedOut | None
    completed: CompletedOut | None
    routed: RoutedOut | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None  # the pipeline run, load to store
    stages: list[StageOut]
    results: list[ResultOut]
    summary: dict[str, Any] | None
    sends: list[SendTimelineOut]
    # The rule's on_findings entries that fired: [{"entry", "results_to", "forwarded_to"}];
    # None when the rule has none (or the job is not done).
    findings_routed: list[dict[str, Any]] | None = None
    # The series lay outside the model's input envelope (docs/envelopes.md): {"model",
    # "action": skip | flag, "outside": [reasons], "scanner": {...}}; None when inside.
    envelope: dict[str, Any] | None = None


class JobDetail(_Model):
    job: JobOut
    timeline: Timeline


# -- destinations -----------------------------------------------------------------------


class EchoOut(_Model):
    ok: bool
    status: int | None
    ms: float | None
    error: str | None


class DestinationOut(_Model):
    name: str
    kind: Literal["dimse", "dicomweb"] = "dimse"
    ae_title: str | None  # a DIMSE destination's; None for a DICOMweb one
    host: str | None
    port: int | None
    calling_ae: str | None
    url: str | None = None  # a DICOMweb destination's service root
    pending: int  # sends waiting or in progress
    failed: int
    oldest_pending_at: datetime | None
    echo: EchoOut | None  # None when the check was not asked for


# -- rules ------------------------------------------------------------------------------


class ClauseOut(_Model):
    keyword: str
    condition: str
    line: int | None


class RuleOut(_Model):
    name: str
    file: str
    line: int | None
    enabled: bool
    priority: int
    stop: bool
    description: str | None
    match: list[ClauseOut]
    pipeline: str | None
    forward_to: list[str]
    send_to: list[str]


class RuleFileOut(_Model):
    name: str
    content: str


class RulesVersionOut(_Model):
    version: str
    loaded_at: datetime
    actor: str
    files: list[str]


class RulesOut(_Model):
    version: str
    rules: list[RuleOut]
    files: list[RuleFileOut]
    last_rejection: str | None  # why the latest edit on disk was refused, if it was
    history: list[RulesVersionOut]


class RuleFileIn(_Model):
    name: Annotated[str, Field(pattern=RULE_FILE_PATTERN, examples=["ct.yaml"])]
    content: Annotated[str, Field(max_length=MAX_RULE_FILE_CHARS)]
    base_version: str | None = Field(
        default=None,
        description="the rules version the edit started from; a different one in force is a "
        "conflict (409), so two editors do not overwrite each other",
    )


class ProblemOut(_Model):
    file: str
    line: int | None
    key: str
    message: str


class RulesRefused(_Model):
    """Invalid rules: a sentence and every problem. A request that is malformed in itself
    (a bad file name, say) gets FastAPI's validation errors in ``detail`` instead."""

    detail: str | list[dict[str, Any]]
    problems: list[ProblemOut] = Field(default_factory=list)


class RulesSaved(_Model):
    name: str
    version: str  # the version of the rules with this file
    in_force: bool  # whether the node has already loaded it
    audit_id: int


class RulesCheckIn(_Model):
    name: Annotated[str, Field(pattern=RULE_FILE_PATTERN, examples=["ct.yaml"])]
    content: Annotated[str, Field(max_length=MAX_RULE_FILE_CHARS)]


class RulesChecked(_Model):
    name: str
    version: str  # the version the rules would have with this file saved
    rules: int  # how many rules they would hold


class DryRunIn(_Model):
    content: Annotated[str, Field(max_length=MAX_RULE_FILE_CHARS)]
    name: Annotated[str | None, Field(pattern=RULE_FILE_PATTERN)] = Field(
        default=None,
        description="test the rules as they would be with this file saved under this name; "
        "without it, the text is tested alone",
    )
    series_uid: Annotated[str, Field(min_length=1, max_length=64)]


class VerdictOut(_Model):
    rule: str
    file: str
    line: int | None
    outcome: Literal["matched", "not matched", "disabled", "skipped"]
    reason: str | None
    stopped_by: str | None


class PlanOut(_Model):
    routed: bool
    matched_rules: list[str]
    forward_to: list[str]
    pipeline_runs: list[PipelineRunOut]


class FindingCheckOut(_Model):
    key: str  # e.g. "Lesion.volume_ml"
    holds: bool
    text: str  # the value and the condition, e.g. "Lesion.volume_ml is 7.2: min 5 holds"


class FindingRouteOut(_Model):
    """An on_findings entry of a matching rule on its pipeline's latest done job."""

    rule: str
    entry: str
    fired: bool
    send_results_to: list[str]
    forward_to: list[str]
    checks: list[FindingCheckOut]


class DryRunOut(_Model):
    series_uid: str
    version: str
    verdicts: list[VerdictOut]
    decision: PlanOut
    explain: str
    # Entries of matching rules whose pipeline has a done job on the series.
    findings_routes: list[FindingRouteOut] = []


# -- audit ------------------------------------------------------------------------------


class AuditOut(_Model):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
