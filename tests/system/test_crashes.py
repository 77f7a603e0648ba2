"""Workers killed with SIGKILL mid-stream, and a worker lost while the other takes over."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.support.mixed_model import mixed_stream
from tests.support.worker import wait_for
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
        behind = await _behind(deployment)
        worker.kill()
        assert behind > 0, "the crash must land mid-stream"
        worker = start_worker(deployment)

    await wait_committed(deployment.bootstrap, deployment)
    await wait_notices(deployment.bootstrap, deployment, stream.model)
    compared = check_state(worker.url, stream.model)
    outputs = await check_outputs(deployment.bootstrap, deployment, stream.model)
    figures.update(
        fault="SIGKILL of the only worker, 3 times", events=len(stream.events),
        entities=compared, lost_or_corrupted=0, **outputs,
    )  # fmt: skip


async def _behind(deployment: Deployment) -> int:
    from tests.system.conftest import committed_behind

    return await committed_behind(
        deployment.bootstrap, deployment, deployment.env["STATEKEEPER_APP_ID"]
    )
