"""Hostile input on every input topic: each bad record is dead-lettered with a reason, the
worker keeps going, and the valid events sent between the bad ones are applied."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekeeper.topics.rejections import Reason
from tests.integration.conftest import ACME_KEY, Deployment
from tests.support.kafka import envelope
from tests.support.worker import http_get, wait_for
from tests.system.conftest import define_rework, read_raw, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.system]

TOPICS = {  # input topic suffix -> (a valid event type, its data, the GET path of its entity)
    "workflow.events": ("workflow.start", {"workflow": "invoice"}, "workflows"),
    "session.events": ("session.start", {"user": "u"}, "sessions"),
    "conversation.events": (
        "conversation.message",
        {"conversation": "c", "role": "user", "content": "hello"},
        "conversations",
    ),
    "lifecycle.events": ("resource.register", {"kind": "file"}, "resources"),
}
FIELDS = ("v", "id", "type", "tenant", "key", "ts", "data")
ENVELOPE_REASONS = {"invalid_envelope", "unsupported_version", "unknown_type", "undecodable"}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=40),
    st.binary(max_size=40),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
# A value no envelope field accepts (ids, types, tenants and keys are non-empty strings;
# v and ts are integers; data is a map): a missing field is tried too.
wrong = st.one_of(
    st.none(), st.booleans(), st.floats(), st.binary(max_size=20), st.lists(scalars, max_size=3)
)


def hostile_values(count: int) -> list[Any]:
    """Draw ``count`` hostile record values with hypothesis (no shrinking: one pass)."""
    drawn: list[Any] = []
    strategy = st.one_of(
        st.binary(max_size=300).map(lambda raw: ("raw", raw)),
        values.map(lambda value: ("packed", value)),
        st.tuples(st.sampled_from(FIELDS), wrong | st.just(KeyError)).map(
            lambda change: ("field", change)
        ),
        st.text(min_size=1, max_size=30).map(lambda kind: ("type", kind)),
    )

    @settings(
        max_examples=count, database=None, derandomize=True, deadline=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn[:count]


def to_record(kind: str, payload: Any, valid: dict[str, Any], types: set[str]) -> bytes | None:
    """The bytes of one hostile record built from a drawn value."""
    if kind == "raw":
        return bytes(payload)
    if kind == "packed":
        return msgpack.packb(payload, use_bin_type=True)
    bad = {**valid, "id": valid["id"] + "-bad"}
    if kind == "type":
        bad["type"] = payload if payload not in types else payload + "!"
    else:
        name, value = payload
        if value is KeyError:
            del bad[name]
        else:
            bad[name] = value
    return msgpack.packb(bad, use_bin_type=True)


def handmade(valid: dict[str, Any]) -> list[tuple[str, bytes | None]]:
    """Edge cases hypothesis rarely reaches: nesting, huge strings, int map keys, no value."""
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    return [
        ("deep", msgpack.packb({**valid, "data": {"x": deep}})),
        ("huge", msgpack.packb({**valid, "data": {"x": "y" * 70_000}})),  # over 64 KiB
        ("long key", msgpack.packb({**valid, "key": "k" * 300})),
        ("int keys", msgpack.packb({1: 2, **valid})),
        ("trailing", msgpack.packb(valid) + b"\x00"),
        ("none", None),
        ("version 2", msgpack.packb({**valid, "v": 2})),
        ("tenant", msgpack.packb({**valid, "tenant": "Acme Corp"})),
        ("control chars", msgpack.packb({**valid, "key": "a\nb"})),
    ]


@pytest.mark.timeout(400)
async def test_fuzzed_records_on_every_topic_are_dead_lettered_and_valid_ones_apply(
    deployment: Deployment, figures: dict[str, Any]
) -> None:
    worker = start_worker(deployment)
    await define_rework(deployment.bootstrap, deployment)
    drawn = hostile_values(480)
    rng = random.Random(5)
    sent_bad: dict[tuple[str, int, int], tuple[str, str]] = {}  # where -> (what, id)
    valid_keys: dict[str, list[str]] = {path: [] for _, _, path in TOPICS.values()}
    producer = AIOKafkaProducer(
        bootstrap_servers=deployment.bootstrap, max_request_size=2**20, linger_ms=5
    )
    await producer.start()
    try:
        for n, (kind, payload) in enumerate(drawn):
            suffix = list(TOPICS)[n % len(TOPICS)]
            event_type, data, path = TOPICS[suffix]
            topic = deployment.topic(suffix)
            valid = envelope(event_type, f"ok-{n}", data)
            records = [(kind, to_record(kind, payload, valid, {event_type}))]
            if n < len(TOPICS) * 9:
                records += handmade(valid)[n // len(TOPICS) : n // len(TOPICS) + 1]
            for what, value in records:
                key = rng.choice([f"acme/bad-{n}".encode(), b"", b"\xff\xfe", None])
                meta = await producer.send_and_wait(topic, key=key, value=value)
                sent_bad[(topic, meta.partition, meta.offset)] = (what, valid["id"] + "-bad")
            await producer.send_and_wait(
                topic, key=valid_record_key(valid), value=msgpack.packb(valid)
            )
            valid_keys[path].append(valid["key"])
    finally:
        await producer.stop()

    for path, keys in valid_keys.items():
        for key in keys:
            suffix = "/messages" if path == "conversations" else ""
            wait_for(
                lambda p=path, k=key, s=suffix: http_get(
                    f"{worker.url}/v1/{p}/{k}{s}", ACME_KEY
                )[0] == 200,
                timeout=120,
            )  # fmt: skip
    letters = {
        (r["topic"], r["partition"], r["offset"]): r
        for r in (msgpack.unpackb(raw) for _, raw in await read_raw(
            deployment.bootstrap, deployment.topic("deadletter")
        ))
    }  # fmt: skip
    # A record whose envelope is valid but sits under a wrong key is re-sent under its own
    # key first (routing by envelope), so its dead letter names the new offset: match its id.
    by_id = {
        r["event"]["id"]: r
        for r in letters.values()
        if isinstance(r["event"], dict) and isinstance(r["event"].get("id"), str)
    }
    known = {str(reason) for reason in Reason} - {"internal_error"}
    for where, (what, bad_id) in sent_bad.items():
        letter = letters.get(where) or by_id.get(bad_id)
        assert letter is not None, f"{what} record at {where} was not dead-lettered"
        assert letter["reason"] in known and letter["detail"], (what, letter)
        if what == "field" and where in letters:
            assert letter["reason"] in ENVELOPE_REASONS, letter
    assert len(letters) == len(sent_bad), "a valid event was dead-lettered"
    assert worker.process is not None and worker.process.poll() is None
    assert http_get(f"{worker.url}/healthz")[0] == 200
    figures.update(
        fault="hostile records (hypothesis + handmade) on 4 topics", bad_inputs=len(sent_bad),
        valid_applied=sum(map(len, valid_keys.values())), dead_lettered=len(letters),
        reasons=sorted({letter["reason"] for letter in letters.values()}),
    )  # fmt: skip


def valid_record_key(event: dict[str, Any]) -> bytes:
    return f"{event['tenant']}/{event['key']}".encode()
