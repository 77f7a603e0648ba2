"""Bad input ends on the dead-letter topic with a reason; the stream keeps going."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.integration.test_workflow_slice import define_invoice, item_when
from tests.support.kafka import envelope, pack, produce, read_topic

pytestmark = pytest.mark.integration


async def test_each_bad_record_is_dead_lettered_and_valid_ones_still_apply(
    deployment: Deployment,
) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    topic = deployment.topic("workflow.events")
    missing_fields = {"v": 1, "type": "workflow.start", "tenant": "acme"}
    wrong_type = envelope("workflow.start", "inv-3", {"workflow": "invoice"}, ts="yesterday")
    oversize = envelope("workflow.start", "inv-4", {"workflow": "invoice", "pad": "x" * 70_000})
    unknown = envelope("workflow.explode", "inv-5", {})
    illegal = envelope("workflow.transition", "inv-6", {"to": "paid"})
    bad = [
        (b"acme/inv-1", b"\xc1\xff not msgpack"),
        (b"acme/inv-2", pack(missing_fields)),
        (b"acme/inv-3", pack(wrong_type)),
        (b"acme/inv-4", pack(oversize)),
        (b"acme/inv-5", pack(unknown)),
        (b"acme/inv-6", pack(illegal)),
        (b"acme/inv-8", None),
    ]
    good = envelope("workflow.start", "inv-9", {"workflow": "invoice"})

    await produce(deployment.bootstrap, topic, [*bad, (b"acme/inv-9", pack(good))])

    item_when(f"{worker.url}/v1/workflows/inv-9", lambda b: b["state"] == "draft")
    letters = await read_topic(deployment.bootstrap, deployment.topic("deadletter"), until=7)
    by_key = {key: value for key, value in letters}
    assert {k: v["reason"] for k, v in by_key.items()} == {
        b"acme/inv-1": "undecodable",
        b"acme/inv-2": "invalid_envelope",
        b"acme/inv-3": "invalid_envelope",
        b"acme/inv-4": "oversize",
        b"acme/inv-5": "unknown_type",
        b"acme/inv-6": "unknown_item",
        b"acme/inv-8": "undecodable",
    }
    for value in by_key.values():
        assert value["topic"] == topic
        assert isinstance(value["offset"], int) and isinstance(value["partition"], int)
        assert value["detail"]
    assert by_key[b"acme/inv-1"]["event"] == b"\xc1\xff not msgpack"
    assert by_key[b"acme/inv-3"]["event"]["ts"] == "yesterday"
    assert "'ts'" in by_key[b"acme/inv-3"]["detail"]
    assert by_key[b"acme/inv-6"]["event"]["id"] == illegal["id"]


async def test_wrong_record_key_is_routed_by_envelope(deployment: Deployment) -> None:
    worker = deployment.start()
    await define_invoice(deployment)
    event = envelope("workflow.start", "inv-10", {"workflow": "invoice"})
    # Three keys that hash elsewhere than acme/inv-10, and a missing key.
    records = [(b"wrong", pack(event))]
    await produce(deployment.bootstrap, deployment.topic("workflow.events"), records)

    body = item_when(f"{worker.url}/v1/workflows/inv-10", lambda b: True, ACME_KEY)

    assert body["version"] == 1
    statuses = await read_topic(deployment.bootstrap, deployment.topic("workflow.status"), until=1)
    assert [(k, v["event_id"]) for k, v in statuses] == [(b"acme/inv-10", event["id"])]
