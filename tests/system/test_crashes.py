"""Workers killed with SIGKILL mid-stream, and a worker lost while the other takes over."""

from __future__ import annotations

import random
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.support.mixed_model import MixedModel, mixed_stream
from tests.support.worker import http_get, wait_for
from tests.system.conftest import (
    check_outputs,
    check_state,
    define_rework,
    progress,
    send_mixed,
    start_worker,
    wait_committed,
    wait_notices,
)

pytestmark = [pytest.mark.integration, pytest.mark.system]


@pytest.mark.timeout(420)
async def test_sigkill_during_mixed_stream_loses_nothing(
    deployment: Deployment, figures: dict[str, Any]
) -> None:
    rng = random.Random(8_2026)
    stream = mixed_stream(rng, 20_000)
    worker = start_worker(deployment)  # creates the topics
    await define_rework(deployment.bootstrap, deployment)
    worker.stop()
    await send_mixed(deployment.bootstrap, deployment, stream)
    worker = start_worker(deployment)
    for _ in range(3):
        # Poll the worker's own progress and kill at a random point of it: never a fixed
        # sleep, which lands before the first record on a slow machine.
        target = rng.randint(800, 5000)
        wait_for(lambda w=worker, t=target: progress(w) >= t, timeout=120, interval=0.05)
        worker.kill()
        # measured after the kill: the worker went on while the admin client connected,
        # and on a fast machine reached the end before it answered
        behind = await _behind(deployment)
        assert behind > 0, "the crash must land mid-stream"
        worker = start_worker(deployment)

    await wait_committed(deployment.bootstrap, deployment)
    await wait_notices(deployment.bootstrap, deployment, stream.model)
    compared = check_state(worker.url, stream.model)
    outputs = await check_outputs(deployment.bootstrap, deployment, stream.model)
    # Every pattern stages a batch's outputs with its state: a SIGKILL repeats none.
    assert (outputs["status_repeats"], outputs["notice_repeats"]) == (0, 0)
    figures.update(
        fault="SIGKILL of the only worker, 3 times", events=len(stream.events),
        entities=compared, lost_or_corrupted=0, **outputs,
    )  # fmt: skip


async def _behind(deployment: Deployment) -> int:
    from tests.system.conftest import committed_behind

    return await committed_behind(
        deployment.bootstrap, deployment, deployment.env["STATEKEEPER_APP_ID"]
    )


class Poller(threading.Thread):
    """Asks both workers for sampled entities over and over, keeping every answer."""

    def __init__(self, urls: list[str], paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls, self.paths = urls, paths
        self.answers: list[tuple[str, str, int, Any, dict[str, str]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for path in self.paths:
                for url in self.urls:
                    status, headers, body = http_get(f"{url}{path}", ACME_KEY)
                    self.answers.append((url, path, status, body, headers))


def expected_answers(model: MixedModel, rng: random.Random) -> dict[str, Any]:
    """GET path -> the fields the model predicts, for a sample of entities of every kind."""
    wanted: dict[str, Any] = {}
    for key in rng.sample(sorted(model.workflows.items), 30):
        item = model.workflows.items[key]
        wanted[f"/v1/workflows/{quote(key)}"] = {
            "state": item.state, "condition": item.condition, "version": item.version,
        }  # fmt: skip
    for key in rng.sample(sorted(model.sessions), 15):
        wanted[f"/v1/sessions/{quote(key)}"] = {"version": model.sessions[key].version}
    for key in rng.sample(sorted(model.resources), 15):
        wanted[f"/v1/resources/{quote(key)}"] = {"version": model.resources[key].version}
    return wanted


@pytest.mark.timeout(400)
async def test_failover_survivor_takes_over_and_never_answers_wrong(
    deployment: Deployment, figures: dict[str, Any]
) -> None:
    rng = random.Random(606)
    stream = mixed_stream(rng, 4000)
    first = start_worker(deployment, "w0")
    second = start_worker(deployment, "w1")
    await define_rework(deployment.bootstrap, deployment)
    await send_mixed(deployment.bootstrap, deployment, stream)
    await wait_committed(deployment.bootstrap, deployment)
    wanted = expected_answers(stream.model, rng)
    owners = {http_get(f"{first.url}{p}", ACME_KEY)[1].get("X-Statekeeper-Owner") for p in wanted}
    assert owners == {first.url, second.url}, "both workers must own some of the sample"

    poller = Poller([first.url, second.url], list(wanted))
    poller.start()
    wait_for(lambda: len(poller.answers) > 3 * len(wanted), timeout=60)
    killed_at = time.monotonic()
    second.kill()

    def survivor_answers_all() -> bool:
        return all(http_get(f"{first.url}{p}", ACME_KEY)[0] == 200 for p in wanted)

    wait_for(survivor_answers_all, timeout=120, interval=0.2)
    takeover_s = time.monotonic() - killed_at
    wait_for(lambda: len(poller.answers) > 10 * len(wanted), timeout=60)
    poller.done.set()
    poller.join(30)

    statuses: dict[int, int] = {}
    for url, path, status, body, headers in poller.answers:
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            assert {k: body[k] for k in wanted[path]} == wanted[path], (url, path)
        elif status == 503:
            assert "Retry-After" in headers, (url, path)
        else:  # only the killed worker may not answer at all
            assert (status, url) == (0, second.url), (url, path, status, body)
    assert statuses.get(200, 0) > 0
    compared = check_state(first.url, stream.model)
    figures.update(
        fault="one of two workers SIGKILLed (session timeout 6 s)", events=len(stream.events),
        entities=compared, takeover_s=round(takeover_s, 1), answers=statuses, wrong_answers=0,
    )  # fmt: skip
