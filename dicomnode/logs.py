"""Structured logging: structlog events, JSON off a terminal, never a patient identifier.

Events are snake_case and past tense (``instance_stored``) with fixed keys
(``series_uid``, ``peer_ae``, ...). ``drop_patient_identifiers`` runs on every event,
including those of libraries that log through the standard library, so a careless
``log.info(..., patient_name=...)`` never reaches the output.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# DICOM keywords (and their snake_case spellings) that identify a patient or a visit.
PATIENT_IDENTIFIER_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "OtherPatientIDs",
        "OtherPatientNames",
        "OtherPatientIDsSequence",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "AccessionNumber",
        "IssuerOfPatientID",
        "MedicalRecordLocator",
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "birth_date",
        "accession_number",
        "other_patient_ids",
    }
)

REDACTED = "[redacted]"


LOG_CACHE_VARIABLE = "DICOMNODE_LOG_CACHE"


def drop_patient_identifiers(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Remove keys that name patient identifiers, at any depth of nested mappings."""
    _scrub(event_dict)
    return event_dict


def _scrub(mapping: MutableMapping[str, Any]) -> None:
    for key in list(mapping):
        if key in PATIENT_IDENTIFIER_KEYS:
            mapping[key] = REDACTED
        elif isinstance(mapping[key], MutableMapping):
            _scrub(mapping[key])


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_patient_identifiers,
    ]


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one redacting pipeline.

    Called once by the composition root; nothing else configures logging.
    """
    stream = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Caching binds each module's logger to these processors for good; a test process
        # that configures logging in-process (the CLI's main()) and later captures events
        # (structlog.testing.capture_logs) turns it off with DICOMNODE_LOG_CACHE=0.
        cache_logger_on_first_use=os.environ.get(LOG_CACHE_VARIABLE, "1") != "0",
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs whole datasets at DEBUG and chatters at INFO; its warnings suffice.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    # pydicom's validation warnings quote element values, which may be identifiers.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for module ``name``; configuration happens once, in the node."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
