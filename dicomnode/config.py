"""The node's configuration: frozen pydantic models loaded from one YAML file.

Every key has a default, so no file at all is a valid configuration (the embedded
default). Unknown keys are errors, and every error names the file, line and key.
Relative paths are resolved against the configuration file's folder, or against the
working directory when no file is given.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    model_validator,
)

from dicomnode.errors import ConfigError
from dicomnode.sourcemap import build_source_map

_AE_TITLE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _check_ae_title(value: str) -> str:
    """PS3.5 6.2: AE is at most 16 characters, no backslash or control characters."""
    stripped = value.strip()
    if not stripped:
        raise ValueError("an AE title must not be empty or only spaces")
    if len(value) > 16:
        raise ValueError(f"an AE title has at most 16 characters, got {len(value)}")
    if _AE_TITLE_FORBIDDEN.search(value):
        raise ValueError("an AE title must not contain a backslash or control characters")
    return stripped


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


TLSVersion = Literal["1.2", "1.3"]


class NodeTLSConfig(_Frozen):
    """The DICOM-TLS listener (PS3.15 Annex B, BCP 195), beside or instead of the plain one."""

    port: Annotated[int, Field(ge=0, le=65535)] = 2762
    certificate: Path  # PEM: the node's certificate, then any intermediates
    private_key: Path  # PEM, unencrypted; readable by the node's user only
    # PEM bundle of the issuers whose client certificates are trusted.
    ca_certificates: Path | None = None
    require_client_certificate: bool = True
    min_version: TLSVersion = "1.2"

    @model_validator(mode="after")
    def _check_client_trust(self) -> NodeTLSConfig:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError(
                "require_client_certificate needs ca_certificates (the trusted issuers)"
            )
        return self


def _check_node_id(value: str) -> str:
    # It names a folder on shared storage and fills 128-character owner columns.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", value):
        raise ValueError(
            "a node id is 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


NodeId = Annotated[str, AfterValidator(_check_node_id)]
Role = Literal["receive", "route", "pipeline", "send"]
ALL_ROLES: tuple[Role, ...] = ("receive", "route", "pipeline", "send")


class NodeConfig(_Frozen):
    """The DICOM listener: who we are and how much we take at once."""

    ae_title: AETitle = "DICOMNODE"
    host: str = "0.0.0.0"
    # The plain (non-TLS) port; null serves DICOM-TLS only (``tls``).
    port: Annotated[int, Field(ge=0, le=65535)] | None = 11112
    tls: NodeTLSConfig | None = None
    max_associations: Annotated[int, Field(ge=1, le=1000)] = 16
    # 128 KiB PDUs keep each read bounded; larger PDUs only save a little per-PDU work.
    max_pdu_bytes: Annotated[int, Field(ge=4096, le=16 * 1024 * 1024)] = 128 * 1024
    idle_timeout_seconds: PositiveSeconds = 60.0
    acse_timeout_seconds: PositiveSeconds = 30.0
    dimse_timeout_seconds: PositiveSeconds = 60.0
    # A connection must finish association negotiation (send its A-ASSOCIATE-RQ) this soon,
    # or it is closed: until then it holds a slot a real sender may need.
    association_request_timeout_seconds: PositiveSeconds = 5.0
    # Connections still negotiating, per source address; more are closed at once. Room for
    # a PACS that opens its parallel associations in one burst (each negotiates in ms).
    max_pending_per_host: Annotated[int, Field(ge=1, le=1000)] = 8
    # One instance's dataset as received; a larger one is refused (0xA700) unstored.
    max_dataset_bytes: Annotated[int, Field(ge=1024 * 1024)] = 1024 * 1024 * 1024
    # Deflated datasets are inflated (in bounded chunks) up to this size; more is 0xA700.
    max_inflated_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024
    # Dataset bytes held in memory by all associations together; a dataset that would
    # pass it is refused (0xA700, a temporary failure the sender retries).
    max_buffered_bytes: Annotated[int, Field(ge=1024 * 1024)] = 2 * 1024 * 1024 * 1024
    # This process's name in a cluster (docs/scaling.md): unique per process; it owns the
    # work it claims and names its folder under ``storage.shared_path``. Default: the
    # host name and the DICOM port (``node_id``).
    id: NodeId | None = None
    # How long a claim of work (a completion to route, a job, a send) holds without
    # renewal; another node takes over a claim only after it expired.
    lease_seconds: Annotated[float, Field(ge=2, le=3600)] = 30.0
    # Which stages run here: receivers without TensorFlow, GPU machines with pipelines.
    roles: tuple[Role, ...] = ALL_ROLES
    # Bind the DICOM ports with SO_REUSEPORT, so several node processes on one host share
    # them and the kernel spreads connections over them (``serve --workers N`` sets it).
    reuse_port: bool = False

    @model_validator(mode="after")
    def _check_some_port(self) -> NodeConfig:
        if self.port is None and self.tls is None:
            raise ValueError("port is null and tls is not set: the node would not listen")
        return self


class PipelineLimits(_Frozen):
    """What a pipeline may allocate for one volume: checked before it loads pixel data."""

    max_voxels: Annotated[int, Field(ge=1)] = 1024 * 1024 * 1024
    max_bytes: Annotated[int, Field(ge=1)] = 4 * 1024 * 1024 * 1024


class StorageConfig(_Frozen):
    """Where received instances are spooled; the SQLite index lives here by default."""

    path: Path = Path("var")
    # Spooled instances (and results) of a series are deleted this long after it completed,
    # once every send and job for it has finished; never earlier.
    retention_hours: Annotated[float, Field(gt=0)] = 72.0
    retention_check_seconds: PositiveSeconds = 600.0
    # The index rows of a series (instances, jobs, sends, decisions) are deleted this long
    # after retention removed its files; the audit log is kept. null keeps them for ever.
    index_retention_days: Annotated[float, Field(gt=0)] | None = 90.0
    # Above this share of the disk used, or below this many free bytes, new instances are
    # refused with 0xA700 (out of resources) until space returns.
    high_water_percent: Annotated[float, Field(gt=0, le=100)] = 90.0
    min_free_bytes: Annotated[int, Field(ge=0)] = 0
    # A folder every node of a cluster mounts (NFS, CephFS: docs/scaling.md). Each node
    # writes its objects under ``<shared_path>/<node id>/`` and reads everyone's.
    shared_path: Path | None = None


class DatabaseConfig(_Frozen):
    """The index database; ``None`` means SQLite inside ``storage.path``."""

    url: str | None = None


class CompletionOverride(_Frozen):
    """Per-modality completion timings; keys left out keep the general value."""

    quiet_seconds: PositiveSeconds | None = None
    settle_seconds: PositiveSeconds | None = None
    max_wait_seconds: PositiveSeconds | None = None


class CompletionPolicy(_Frozen):
    """When a series counts as complete (see ``store.completion``)."""

    quiet_seconds: PositiveSeconds = 30.0
    settle_seconds: PositiveSeconds = 2.0
    max_wait_seconds: PositiveSeconds = 3600.0


class CompletionConfig(CompletionPolicy):
    by_modality: Mapping[str, CompletionOverride] = Field(default_factory=dict)

    def policy_for(self, modality: str | None) -> CompletionPolicy:
        """The timings for a series of ``modality``."""
        override = self.by_modality.get(modality or "")
        base = CompletionPolicy(
            quiet_seconds=self.quiet_seconds,
            settle_seconds=self.settle_seconds,
            max_wait_seconds=self.max_wait_seconds,
        )
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))


def _caller_from_string(value: Any) -> Any:
    """Accept ``"AE"`` and ``"AE@HOST"`` as short forms of a caller mapping."""
    if isinstance(value, str):
        ae_title, _, host = value.partition("@")
        return {"ae_title": ae_title, "host": host or None}
    return value


class Caller(_Frozen):
    """A peer allowed to send to us: its AE title and, optionally, its host address and
    the subject of its TLS client certificate (e.g. ``"CN=ct1.example.org"``)."""

    ae_title: AETitle
    host: str | None = None
    # Every ``attribute=value`` listed must be in the verified client certificate's
    # subject; a caller with one is allowed over DICOM-TLS only.
    certificate_subject: str | None = None

    def allows(self, ae_title: str, host: str, certificate_subject: str | None = None) -> bool:
        if ae_title.strip() != self.ae_title or (self.host is not None and self.host != host):
            return False
        if self.certificate_subject is None:
            return True
        return certificate_subject is not None and subject_matches(
            self.certificate_subject, certificate_subject
        )


class RetryPolicy(_Frozen):
    """How the outbox retries a destination: exponential backoff with jitter, then gives up."""

    initial_seconds: PositiveSeconds = 10.0
    max_seconds: PositiveSeconds = 600.0
    max_age_seconds: PositiveSeconds = 24 * 3600.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2  # +/- this fraction of each delay


class DestinationTLS(_Frozen):
    """DICOM-TLS towards a destination: its certificate is verified (chain and name)."""

    # PEM bundle of the issuers trusted for the destination's certificate; null: the
    # system's trust store.
    ca_certificates: Path | None = None
    certificate: Path | None = None  # our client certificate, when the peer asks for one
    private_key: Path | None = None
    server_name: str | None = None  # the name its certificate must carry; default: host
    min_version: TLSVersion = "1.2"

    @model_validator(mode="after")
    def _check_pair(self) -> DestinationTLS:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self


class Destination(_Frozen):
    """A DICOM node we send to by C-STORE (``kind: dimse``, the default)."""

    kind: Literal["dimse"] = "dimse"
    ae_title: AETitle
    host: str
    port: Port
    calling_ae: AETitle | None = None  # our AE title towards it; default node.ae_title
    retry: RetryPolicy = RetryPolicy()
    connect_timeout_seconds: PositiveSeconds = 10.0
    network_timeout_seconds: PositiveSeconds = 60.0
    tls: DestinationTLS | None = None
    # Proof of delivery (PS3.4 Annex J): after every instance is acknowledged, ask the
    # destination to commit to keeping them; its N-EVENT-REPORT marks the send committed.
    storage_commitment: bool = False
    commitment_timeout_seconds: PositiveSeconds = 300.0


class DicomwebAuth(_Frozen):
    """How we authenticate to a DICOMweb service: a bearer token, or a user and password.

    Only file names are configured: the secrets are read (and refused when other users
    may read them) when the node starts, as admin token files are, never at load.
    """

    bearer_token_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _check_one_scheme(self) -> DicomwebAuth:
        basic = self.username is not None or self.password_file is not None
        if self.bearer_token_file is not None and basic:
            raise ValueError("give bearer_token_file, or username and password_file, not both")
        if basic and (self.username is None or self.password_file is None):
            raise ValueError("username and password_file go together")
        if self.bearer_token_file is None and not basic:
            raise ValueError("give bearer_token_file, or username and password_file")
        if self.username is not None and (not self.username or ":" in self.username):
            raise ValueError("username must not be empty or contain ':' (RFC 7617)")
        return self


def _check_service_url(value: str) -> str:
    """An http(s) URL with a host: the DICOMweb service root, without query or fragment."""
    parsed = urlsplit(value)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(
            "url must be http:// or https:// with a host, e.g. "
            "http://127.0.0.1:8042/dicom-web (the DICOMweb service root)"
        )
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ValueError("url takes no query, fragment or credentials (use auth)")
    return value.rstrip("/")


class DicomwebDestination(_Frozen):
    """A DICOMweb service we send to by STOW-RS (``kind: dicomweb``).

    TLS (https) is always verified; there is no setting to turn that off.
    """

    kind: Literal["dicomweb"]
    url: Annotated[str, AfterValidator(_check_service_url)]
    auth: DicomwebAuth | None = None
    # PEM bundle of the issuers trusted for the service's certificate; null: the system's.
    ca_certificates: Path | None = None
    timeout_seconds: PositiveSeconds = 60.0  # to connect, and between bytes of the answer
    retry: RetryPolicy = RetryPolicy()
    # Instances go in multipart STOW-RS requests of at most this many bytes (a larger
    # instance goes alone).
    max_request_bytes: Annotated[int, Field(ge=1024 * 1024)] = 64 * 1024 * 1024


def _destination_kind(value: Any) -> str:
    """``kind`` picks the model; left out, a destination is a DIMSE one (as before)."""
    if isinstance(value, Mapping):
        kind = value.get("kind", "dimse")
        return kind if isinstance(kind, str) else "?"
    return str(getattr(value, "kind", "dimse"))


# The tags carry a "[" so that error locations drop them (``_is_validator_tag``).
AnyDestination = Annotated[
    Annotated[Destination, Tag("kind[dimse]")]
    | Annotated[DicomwebDestination, Tag("kind[dicomweb]")],
    Discriminator(
        lambda v: f"kind[{_destination_kind(v)}]",
        custom_error_type="destination_kind",
        custom_error_message="kind must be dimse (the default) or dicomweb",
    ),
]


class AdminToken(_Frozen):
    """One bearer token of the admin API, read from a file only its owner may read."""

    file: Path
    role: Literal["viewer", "admin"] = "viewer"  # viewers read; admins also change things
    name: str | None = None  # for the audit log; default: the file's name


class AdminTLSConfig(_Frozen):
    """HTTPS for the admin API and page."""

    certificate: Path
    private_key: Path


class AdminConfig(_Frozen):
    """The HTTP admin API: loopback by default; any other address needs a token.

    Token files are read, and refused when other users may read them, by the admin
    stage at start-up (``dicomnode.admin.tokens``), not here: loading a configuration
    touches no secret.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    token: SecretStr | None = None  # SecretStr: `config show` prints it as stars
    token_file: Path | None = None  # an admin-role token (as ``tokens`` with role admin)
    tokens: tuple[AdminToken, ...] = ()
    tls: AdminTLSConfig | None = None  # HTTPS on admin.port instead of HTTP
    # Host header values served (DNS rebinding): names, "*.domain", or "*" for any (only
    # behind a proxy that checks them). Loopback names, IP literals and ``host`` are
    # always served; null adds this machine's host name and fully qualified name.
    allowed_hosts: tuple[str, ...] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024  # larger bodies: 413
    # Failed authentications from one client address within the window, then 429.
    max_auth_failures: Annotated[int, Field(ge=1)] = 10
    auth_failure_window_seconds: PositiveSeconds = 60.0
    metrics_public: bool = False  # let Prometheus scrape /metrics without the token

    @model_validator(mode="after")
    def _check_admin(self) -> AdminConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both (or list them in tokens)")
        for name in self.allowed_hosts or ():
            if not re.fullmatch(r"\*|(\*\.)?[A-Za-z0-9_.:\[\]-]+", name):
                raise ValueError(
                    f"allowed_hosts: {name!r} is not a host name (no scheme, path or "
                    "spaces; '*.example.org' for a domain's names)"
                )
        return self


class LoggingConfig(_Frozen):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": JSON lines unless standard error is a terminal.
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Frozen):
    """The whole, validated configuration of one node."""

    node: NodeConfig = NodeConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    completion: CompletionConfig = CompletionConfig()
    callers: tuple[Annotated[Caller, BeforeValidator(_caller_from_string)], ...] = ()
    destinations: Mapping[str, AnyDestination] = Field(default_factory=dict)
    rules_dir: Path = Path("rules")
    # Models and pipelines beside the built-in reference ones; validated by the pipeline
    # stage (``dicomnode config check``), which knows the step and runner kinds.
    models: Mapping[str, Any] = Field(default_factory=dict)
    pipelines: Mapping[str, Any] = Field(default_factory=dict)
    pipeline_workers: Annotated[int, Field(ge=1, le=16)] = 2
    pipeline_limits: PipelineLimits = PipelineLimits()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    # The folder relative model paths are taken from (the configuration file's).
    base_dir: Path = Path()

    @model_validator(mode="after")
    def _check_destination_names(self) -> Config:
        for name in self.destinations:
            # 64: the index's column for it (PostgreSQL refuses longer text there).
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(
                    f"destination name {name[:80]!r} may only use letters, digits, '_', '.',"
                    " '-', at most 64 of them"
                )
        return self

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the index."""
        if self.database.url is not None:
            return self.database.url
        return f"sqlite:///{self.storage.path / 'dicomnode.db'}"

    @property
    def node_id(self) -> str:
        """This process's id in a cluster: ``node.id``, else host name and DICOM port."""
        if self.node.id is not None:
            return self.node.id
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:50] or "node"
        port = self.node.port if self.node.port is not None else "tls"
        return f"{host}-{port}"

    @property
    def spool_path(self) -> Path:
        """Where this node writes received instances: its own folder under the shared
        storage when there is one, else ``spool`` in ``storage.path``."""
        if self.storage.shared_path is not None:
            return self.storage.shared_path / self.node_id
        return self.storage.path / "spool"

    @property
    def lock_folder(self) -> Path:
        """The folder whose lock file says one process owns it: ``storage.path``, or on
        shared storage the node's own folder there (one process per node id)."""
        return self.spool_path if self.storage.shared_path is not None else self.storage.path

    @property
    def spool_prefix(self) -> str | None:
        """What this node's spool names start with on shared storage (None: alone)."""
        return None if self.storage.shared_path is None else self.node_id

    def resolved(self, base: Path) -> Config:
        """A copy whose relative paths are taken from ``base``."""
        storage = self.storage.model_copy(
            update={
                "path": _under(base, self.storage.path),
                "shared_path": None
                if self.storage.shared_path is None
                else _under(base, self.storage.shared_path),
            }
        )
        admin = self.admin.model_copy(
            update={"token_file": _under(base, self.admin.token_file)}
            if self.admin.token_file is not None
            else {}
        )
        admin = admin.model_copy(
            update={
                "tokens": tuple(_paths_under(base, token) for token in admin.tokens),
                "tls": _paths_under(base, admin.tls),
            }
        )
        node = self.node.model_copy(update={"tls": _paths_under(base, self.node.tls)})
        destinations = {name: _destination_under(base, d) for name, d in self.destinations.items()}
        return self.model_copy(
            update={
                "node": node,
                "destinations": destinations,
                "admin": admin,
                "storage": storage,
                "rules_dir": _under(base, self.rules_dir),
                "base_dir": _under(base, self.base_dir),
            }
        )

    def allows_caller(
        self, ae_title: str, host: str, certificate_subject: str | None = None
    ) -> bool:
        """Whether a calling AE title from ``host`` (with a verified client certificate of
        ``certificate_subject``, over TLS) may associate; any, when ``callers`` is unset."""
        return not self.callers or any(
            c.allows(ae_title, host, certificate_subject) for c in self.callers
        )


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


_Model = TypeVar("_Model", bound=BaseModel)


def _destination_under(
    base: Path, destination: Destination | DicomwebDestination
) -> Destination | DicomwebDestination:
    if isinstance(destination, Destination):
        return destination.model_copy(update={"tls": _paths_under(base, destination.tls)})
    update: dict[str, Any] = {"auth": _paths_under(base, destination.auth)}
    if destination.ca_certificates is not None:
        update["ca_certificates"] = _under(base, destination.ca_certificates)
    return destination.model_copy(update=update)


def _paths_under(base: Path, model: _Model | None) -> _Model | None:
    """A copy of ``model`` whose (optional) Path fields are taken from ``base``."""
    if model is None:
        return None
    update = {
        name: _under(base, value)
        for name in type(model).model_fields
        if isinstance(value := getattr(model, name), Path)
    }
    return model.model_copy(update=update)


def _subject_pairs(subject: str) -> set[tuple[str, str]]:
    pairs = set()
    for part in re.split(r"(?<!\\),", subject.strip()):
        if part:
            attribute, _, value = part.partition("=")
            pairs.add((attribute.strip().upper(), value.strip()))
    return pairs


def subject_matches(wanted: str, subject: str) -> bool:
    """Whether every ``attribute=value`` of ``wanted`` is in certificate ``subject``.

    Both are RFC 4514 strings (``CN=ct1,O=Hospital``; ``openssl x509 -noout -subject
    -nameopt RFC2253`` prints one); attribute names are case-insensitive, values exact.
    """
    needed = _subject_pairs(wanted)
    return bool(needed) and needed <= _subject_pairs(subject)


def load_config(path: Path | None) -> Config:
    """Load and validate ``path``; ``None`` gives the embedded default.

    Raises ConfigError whose message lists every problem as ``file:line: key: message``.
    """
    if path is None:
        return Config().resolved(Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate configuration ``text`` that was read from ``path``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the configuration must be a mapping of keys to values")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, text, path)) from exc
    return config.resolved(path.parent.resolve())


def _describe(exc: ValidationError, text: str, path: Path) -> str:
    source = build_source_map(text)
    problems = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_validator_tag(part)]
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = source.line_of(loc)
        where = f"{path}:{line}" if line is not None else str(path)
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append(f"{where}: {key}: {message}")
    return "\n".join(problems)


def _is_validator_tag(part: str | int) -> bool:
    """Pydantic puts validator names such as ``function-before[...]`` into locations."""
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def dump_default_config() -> str:
    """The embedded default as YAML, for documentation and ``config show``."""
    data = Config().model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
