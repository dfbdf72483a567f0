"""The OpenAPI document tells the truth: schemathesis generates requests from it and
checks every response against it (status codes, content types, bodies); none is a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.openapi import from_asgi
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from dicomnode.admin import AdminAccess, AdminServices, create_app
from dicomnode.admin.hosts import AllowedHosts
from dicomnode.admin.tokens import single
from dicomnode.node import Node
from dicomnode.testing.ports import refusing_port


@pytest.fixture
def api_schema(
    node_factory: Callable[..., Node],
    services_for: Callable[..., AdminServices],
    token: str,
    write_rules: Callable[..., Any],
    make_destination: Callable[..., dict[str, Any]],
    send_phantom: Callable[..., Any],
    routed: Callable[[Node, str], None],
) -> Any:
    """The API of a node holding one routed series and a send to a destination that is down."""
    write_rules("- {name: fwd, match: {Modality: CT}, forward_to: [down]}\n")
    node = node_factory(destinations={"down": make_destination("DOWN", refusing_port())})
    routed(node, send_phantom(node).series_instance_uid)
    # schemathesis' ASGI client names itself "testserver" in every request's Host; its
    # checks send wrong tokens, which must not lock the rest of its requests out (429).
    access = AdminAccess(
        tokens=single(token),
        allowed_hosts=AllowedHosts.of(["testserver"], "127.0.0.1"),
        max_auth_failures=1_000_000,
    )
    return from_asgi("/openapi.json", create_app(services_for(node), access))


# One test walks every operation: schemathesis' from_fixture does not run under pytest 9
# (it sets Function._nodeid, which pytest 9 no longer has).
_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _check_operation(
    operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode, token: str
) -> None:
    @given(case=operation.as_strategy(mode))
    @_SETTINGS
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            # A change is always declared JSON, with or without a body (else 415).
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if case.method != "GET"
            else {"Authorization": f"Bearer {token}"},
            excluded_checks=[
                # A well-formed request may still be refused for what it means (rules that
                # do not validate: 422 with the problems; an unknown series: 404); those
                # answers are in the document, which the other checks hold the API to.
                positive_data_acceptance,
                # Negative cases whose flaw is lost on the wire (an extra query parameter
                # whose value is null is not sent at all) arrive valid and are answered
                # 200. Unknown parameters are refused: test_unknown_query_parameters_are_422.
                negative_data_rejection,
            ],
        )

    check()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # its own
def test_the_api_conforms_to_its_openapi_and_never_fails_with_5xx(
    api_schema: Any, token: str
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:
        _check_operation(operation, GenerationMode.POSITIVE, token)
        # Requests that break the document, where it has something to break.
        if operation.path_parameters or operation.query or operation.body:
            _check_operation(operation, GenerationMode.NEGATIVE, token)


def test_unknown_query_parameters_are_422(node: Node, client_for: Callable[..., Any]) -> None:
    client = client_for(node)
    for path in ("/api/series", "/api/jobs", "/api/destinations", "/api/audit"):
        response = client.get(path, params={"stat": "failed"})
        assert response.status_code == 422, path
