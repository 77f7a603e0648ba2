"""/openapi.json matches the implementation: schemathesis calls every operation with
generated parameters, and status codes, content types and bodies must match the document."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from tests.integration.conftest import ACME_KEY, Deployment
from tests.integration.test_workflow_slice import define_invoice
from tests.support.kafka import envelope, send_envelopes
from tests.support.worker import http_get, wait_for

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 30


async def test_every_operation_conforms_to_the_document(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    await send_envelopes(
        deployment.bootstrap,
        deployment.topic("workflow.events"),
        [envelope("workflow.start", f"inv-{n}", {"workflow": "invoice"}) for n in range(5)],
    )
    wait_for(lambda: http_get(f"{worker.url}/v1/workflows/inv-4", ACME_KEY)[0] == 200)
    status, _, spec = http_get(f"{worker.url}/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(spec)
    headers = {"Authorization": f"Bearer {ACME_KEY}"}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    endless = {"GET /v1/dashboard/stream"}  # never ends by design; tested in test_dashboard
    operations = [op for op in operations if op.label not in endless]

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
        )
        def check(case: schemathesis.Case) -> None:
            # ignored_auth calls again without the key (the security test covers auth);
            # positive_data_acceptance wants every schema-valid value accepted, but a cursor
            # is opaque: only the ones the API handed out are valid.
            case.call_and_validate(
                base_url=worker.url,
                headers=headers,
                excluded_checks=[ignored_auth, positive_data_acceptance],
            )

        try:
            check()
        except Exception as failure:  # collect every operation's failure, then report all
            failures[operation.label] = str(failure)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
