"""Session memory end to end: events over Kafka, answers over HTTP, closure notices."""

from __future__ import annotations

import random
import shutil
import time
from typing import Any

import msgpack
import pytest
from aiokafka import AIOKafkaConsumer

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.support.kafka import envelope, read_topic, send_envelopes
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration


async def send(deployment: Deployment, events: list[dict[str, Any]]) -> None:
    await send_envelopes(deployment.bootstrap, deployment.topic("session.events"), events)


def session_url(worker: WorkerProcess, session: str) -> str:
    return f"{worker.url}/v1/sessions/{session}"


def session_when(worker: WorkerProcess, session: str, predicate: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status, _, body = http_get(session_url(worker, session), ACME_KEY)
        return body if status == 200 and predicate(body) else None

    return wait_for(check, timeout=60)  # type: ignore[no-any-return]


def gone(worker: WorkerProcess, session: str) -> bool:
    status, _, body = http_get(session_url(worker, session), ACME_KEY)
    return status == 404 and body["error"]["code"] == "not_found"


async def read_with_time(
    bootstrap: str, topic: str, *, until: int, timeout: float
) -> list[tuple[int, dict[str, Any]]]:
    """(Kafka record timestamp in ms, decoded value) of ``topic`` from the start."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[int, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < until and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [(r.timestamp, msgpack.unpackb(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


async def dead_letters(deployment: Deployment, until: int, timeout: float = 30) -> dict[str, str]:
    """Event id -> reason, for every record on the dead-letter topic."""
    letters = await read_topic(
        deployment.bootstrap, deployment.topic("deadletter"), until=until, timeout=timeout
    )
    return {letter["event"]["id"]: letter["reason"] for _, letter in letters}


def metric(worker: WorkerProcess, line_start: str) -> float:
    _, _, text = http_get(f"{worker.url}/metrics")
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    ]
    return sum(values)


# --- a five-step form --------------------------------------------------------------------


async def test_five_step_form_through_kafka_and_http(deployment: Deployment) -> None:
    worker = deployment.start()
    steps = {
        1: {"name": "Ada", "tmp": "scratch"},
        2: {"email": "ada@example.com"},
        3: {"plan": "pro", "seats": 3},
        4: {"address": {"city": "London", "lines": ["12 Analytical St"]}},
        5: {"agree": True},
    }
    start = envelope("session.start", "form-1", {"user": "u-7", "data": {"source": "web"}})
    updates = [
        envelope("session.update", "form-1", {"step": n, "data": d}) for n, d in steps.items()
    ]
    remove = envelope("session.update", "form-1", {"remove": ["tmp"]})
    await send(deployment, [start, *updates, remove, updates[1]])  # the last is a redelivery

    body = session_when(worker, "form-1", lambda b: b["version"] == 7)

    assert body["user"] == "u-7"
    assert (body["step"], body["steps_done"]) == (5, [1, 2, 3, 4])
    assert body["data"] == {
        "source": "web",
        "name": "Ada",  # from step one, still there at step five
        "email": "ada@example.com",
        "plan": "pro",
        "seats": 3,
        "address": {"city": "London", "lines": ["12 Analytical St"]},
        "agree": True,
    }
    assert body["idle_deadline"] == body["updated_at"] + 1800 * 1000
    assert body["absolute_deadline"] == body["created_at"] + 86400 * 1000
    assert http_get(session_url(worker, "form-1"), GLOBEX_KEY)[0] == 404
    assert metric(worker, 'statekeeper_events_duplicate_total{type="session.update"}') == 1

    end = envelope("session.end", "form-1", {"reason": "submitted"})
    await send(deployment, [end])
    wait_for(lambda: gone(worker, "form-1"), timeout=30)

    notices = await read_with_time(
        deployment.bootstrap, deployment.topic("lifecycle.notices"), until=2, timeout=5
    )
    assert len(notices) == 1
    _, notice = notices[0]
    assert (notice["type"], notice["reason"], notice["key"]) == (
        "session.closed",
        "ended",
        "form-1",
    )
    assert notice["note"] == "submitted"
    assert notice["session"]["data"] == body["data"]
    assert notice["session"]["version"] == 8  # the end counts as a change
    assert notice["closed_at"] == notice["session"]["updated_at"]
    assert metric(worker, "statekeeper_sessions_started_total") == 1
    assert metric(worker, 'statekeeper_sessions_closed_total{reason="ended"}') == 1


# --- bad input ---------------------------------------------------------------------------


async def test_bad_session_input_is_dead_lettered_and_valid_events_still_apply(
    deployment: Deployment,
) -> None:
    worker = deployment.start(
        STATEKEEPER_SESSION_MAX_FIELDS="4", STATEKEEPER_SESSION_MAX_BYTES="1024"
    )
    bad = {
        "too-large-start": envelope(
            "session.start", "s-big", {"user": "u", "data": {"blob": "x" * 2000}}
        ),
        "unknown": envelope("session.update", "never-started", {"data": {"a": 1}}),
        "unknown-end": envelope("session.end", "never-started", {}),
        "exists": envelope("session.start", "s-2", {"user": "again"}),
        "invalid": envelope("session.update", "s-2", {"data": {"when": {"bad": b"\x00"}}}),
        "too-many-fields": envelope(
            "session.update", "s-2", {"data": {f"f{i}": i for i in range(5)}}
        ),
        "closed": envelope("session.update", "s-1", {"data": {"late": True}}),
        "closed-start": envelope("session.start", "s-1", {"user": "u"}),
    }
    stream = [
        envelope("session.start", "s-1", {"user": "u"}),
        envelope("session.end", "s-1", {}),
        envelope("session.start", "s-2", {"user": "u", "data": {"kept": 1}}),
        *bad.values(),
        envelope("session.update", "s-2", {"step": "after", "data": {"ok": True}}),
    ]
    for name, event in bad.items():
        event["id"] = name
    await send(deployment, stream)

    body = session_when(worker, "s-2", lambda b: b["step"] == "after")

    assert (body["user"], body["data"], body["version"]) == ("u", {"kept": 1, "ok": True}, 2)
    assert gone(worker, "s-1") and gone(worker, "s-big") and gone(worker, "never-started")
    assert await dead_letters(deployment, until=len(bad)) == {
        "too-large-start": "session_too_large",
        "unknown": "unknown_session",
        "unknown-end": "unknown_session",
        "exists": "session_exists",
        "invalid": "invalid_data",
        "too-many-fields": "session_too_large",
        "closed": "session_closed",
        "closed-start": "session_closed",
    }


# --- expiry across restarts -------------------------------------------------------------


async def test_expiry_survives_restarts_and_stays_final(deployment: Deployment) -> None:
    worker = deployment.start()
    await send(
        deployment,
        [
            envelope("session.start", "idle-1", {"user": "u", "idle_timeout_s": 30}),
            envelope("session.start", "life-1", {"user": "u", "max_lifetime_s": 40}),
            envelope("session.start", "keep-1", {"user": "u", "data": {"k": 1}}),
        ],
    )
    idle = session_when(worker, "idle-1", lambda b: True)
    await send(deployment, [envelope("session.update", "life-1", {"data": {"n": 1}})])
    life = session_when(worker, "life-1", lambda b: b["version"] == 2)
    session_when(worker, "keep-1", lambda b: True)
    deadlines = {"idle-1": idle["idle_deadline"], "life-1": life["absolute_deadline"]}

    worker.stop()  # the last event is in; the deadlines are ahead
    worker = deployment.start()
    assert time.time() * 1000 < min(deadlines.values()), "restart took past the deadlines"

    notices = await read_with_time(
        deployment.bootstrap, deployment.topic("lifecycle.notices"), until=2, timeout=90
    )
    by_key = {notice["key"]: (stamp, notice) for stamp, notice in notices}
    assert set(by_key) == {"idle-1", "life-1"}
    assert by_key["idle-1"][1]["reason"] == "idle"
    assert by_key["life-1"][1]["reason"] == "max_lifetime"
    assert by_key["life-1"][1]["session"]["data"] == {"n": 1}
    for key, (stamp, notice) in by_key.items():
        assert notice["closed_at"] == deadlines[key]
        assert stamp >= deadlines[key], "closed before its deadline"
    wait_for(lambda: gone(worker, "idle-1") and gone(worker, "life-1"), timeout=10)

    worker.stop()
    worker = deployment.start()
    assert gone(worker, "idle-1") and gone(worker, "life-1")
    late = envelope("session.update", "idle-1", {"data": {"late": 1}}, id="late-1")
    await send(deployment, [late])
    assert await dead_letters(deployment, until=1) == {"late-1": "session_closed"}

    worker.stop()
    shutil.rmtree(deployment.root / "w0")  # rebuilt from the changelogs alone
    worker = deployment.start()
    assert gone(worker, "idle-1") and gone(worker, "life-1")
    assert session_when(worker, "keep-1", lambda b: True)["data"] == {"k": 1}
    later = envelope("session.start", "life-1", {"user": "u"}, id="late-2")
    await send(deployment, [later])
    assert await dead_letters(deployment, until=2) == {
        "late-1": "session_closed",
        "late-2": "session_closed",
    }
    notices = await read_with_time(
        deployment.bootstrap, deployment.topic("lifecycle.notices"), until=4, timeout=5
    )
    # A rebuild from the changelogs may send a closure's notice again (README: closing);
    # never a new closure, and a repeat is the same notice.
    assert {notice["key"] for _, notice in notices} == {"idle-1", "life-1"}
    for key, (_, first) in by_key.items():
        assert all(n == first for _, n in notices if n["key"] == key), key


# --- random streams against a reference model --------------------------------------------


def random_stream(rng: random.Random, sessions: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Events for ``sessions`` sessions, interleaved, and what each should hold at the end."""
    fields = [f"f{i}" for i in range(10)]
    per_session: dict[str, list[dict[str, Any]]] = {}
    expected: dict[str, Any] = {}
    for n in range(sessions):
        key = f"r-{n}"
        data: dict[str, Any] = {}
        step: Any = None
        done: list[Any] = []
        events = [envelope("session.start", key, {"user": f"u{n}"})]
        for _ in range(rng.randint(1, 12)):
            body: dict[str, Any] = {"data": {f: rng.randint(0, 99) for f in rng.sample(fields, 2)}}
            body["remove"] = [f for f in rng.sample(fields, 2) if f not in body["data"]]
            if rng.random() < 0.5:
                body["step"] = rng.choice(["a", "b", "c", "d"])
            data.update(body["data"])
            for name in body["remove"]:
                data.pop(name, None)
            new_step = body.get("step", step)
            if new_step != step and step is not None and step not in done:
                done.append(step)
            step = new_step
            events.append(envelope("session.update", key, body))
        ended = rng.random() < 0.25
        if ended:
            events.append(envelope("session.end", key, {}))
        per_session[key] = events
        expected[key] = {"data": data, "step": step, "steps_done": done, "ended": ended,
                         "version": len(events)}  # fmt: skip
    stream: list[dict[str, Any]] = []
    queues = list(per_session.values())
    while queues:  # interleave sessions, keeping each session's own order
        queue = rng.choice(queues)
        stream.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return stream, expected


async def test_random_stream_final_snapshots_match_the_model(deployment: Deployment) -> None:
    stream, expected = random_stream(random.Random(4242), sessions=60)
    first = deployment.start("w0")
    second = deployment.start("w1")
    await send(deployment, stream)

    ended = {key for key, want in expected.items() if want["ended"]}
    notices = await read_with_time(
        deployment.bootstrap, deployment.topic("lifecycle.notices"), until=len(ended), timeout=60
    )
    snapshots = {notice["key"]: notice["session"] for _, notice in notices}
    assert set(snapshots) == ended
    for key, want in expected.items():
        if key in ended:
            got = snapshots[key]
            # the notice is acknowledged just before RocksDB drops the session: poll
            wait_for(lambda k=key: all(gone(w, k) for w in (first, second)), timeout=10)
        else:
            got = session_when(first, key, lambda b, v=want["version"]: b["version"] == v)
            assert http_get(session_url(second, key), ACME_KEY)[2] == got
        assert (got["data"], got["step"], got["steps_done"], got["version"]) == (
            want["data"], want["step"], want["steps_done"], want["version"],
        ), key  # fmt: skip


# --- a crash between notices and tombstones ------------------------------------------------


async def first_notice(bootstrap: str, topic: str, timeout: float = 60) -> None:
    """Return as soon as ``topic`` holds a record (polling, no fixed sleep)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if any((await consumer.getmany(timeout_ms=50)).values()):
                return
        raise TimeoutError("no notice")
    finally:
        await consumer.stop()


async def test_sigkill_while_closing_loses_no_notice(deployment: Deployment) -> None:
    keys = [f"c-{n}" for n in range(150)]
    worker = deployment.start()
    await send(deployment, [envelope("session.start", k, {"user": "u"}) for k in keys])
    session_when(worker, keys[-1], lambda b: True)
    await send(deployment, [envelope("session.end", k, {}) for k in keys])
    notices_topic = deployment.topic("lifecycle.notices")

    await first_notice(deployment.bootstrap, notices_topic)
    worker.kill()  # closures in flight: notices sent, tombstones and commits perhaps not
    worker = deployment.start()

    notices = await read_with_time(deployment.bootstrap, notices_topic, until=10**6, timeout=15)
    copies: dict[str, set[bytes]] = {}
    for _, notice in notices:
        copies.setdefault(notice["key"], set()).add(msgpack.packb(notice))
    assert set(copies) == set(keys)  # none lost
    assert all(len(versions) == 1 for versions in copies.values())  # repeats are identical
    wait_for(lambda: all(gone(worker, key) for key in keys), timeout=10)
    late = [envelope("session.update", k, {"data": {"x": 1}}, id=f"late-{k}") for k in keys[:5]]
    await send(deployment, late)
    letters = await dead_letters(deployment, until=5)
    assert letters == {f"late-{k}": "session_closed" for k in keys[:5]}
