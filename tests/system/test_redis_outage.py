"""Redis stopped in the middle of a run: events go on, reports bypass the cache, caching resumes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.integration.test_reports import report
from tests.support.mixed_model import mixed_stream
from tests.support.redis_server import RedisServer
from tests.support.worker import wait_for
from tests.system.conftest import (
    check_outputs,
    check_state,
    committed_behind,
    define_rework,
    progress,
    send_mixed,
    start_worker,
    wait_committed,
    wait_notices,
)

pytestmark = [pytest.mark.integration, pytest.mark.system]


@pytest.mark.timeout(400)
async def test_redis_down_mid_run_events_go_on_reports_bypass_then_cache_again(
    deployment: Deployment, figures: dict[str, Any]
) -> None:
    stream = mixed_stream(random.Random(31), 6000)
    redis_server = RedisServer(deployment.root / "private-redis").start()
    try:
        worker = start_worker(
            deployment,
            STATEKEEPER_REDIS_URL=redis_server.url,
            STATEKEEPER_CACHE_BREAKER_RETRY_S="1",
        )
        await define_rework(deployment.bootstrap, deployment)
        await send_mixed(deployment.bootstrap, deployment, stream)
        wait_for(lambda: progress(worker) >= 500, timeout=120, interval=0.05)
        assert report(worker)[0] in ("miss", "hit")

        redis_server.stop()
        group = deployment.env["STATEKEEPER_APP_ID"]
        assert await committed_behind(deployment.bootstrap, deployment, group) > 0
        during = [report(worker)[0] for _ in range(5)]
        await wait_committed(deployment.bootstrap, deployment)
        status, result = report(worker)
        counts = stream.model.workflows.counts()["states"]

        redis_server.start()
        resumed = wait_for(lambda: report(worker)[0] == "hit", timeout=60)
    finally:
        redis_server.stop()

    assert during == ["bypass"] * 5
    assert status == "bypass"
    assert {state: row["items"] for state, row in result["states"].items()} == counts
    assert resumed
    await wait_notices(deployment.bootstrap, deployment, stream.model)
    compared = check_state(worker.url, stream.model)
    outputs = await check_outputs(deployment.bootstrap, deployment, stream.model)
    figures.update(
        fault="private Redis killed mid-run, restarted", events=len(stream.events),
        entities=compared, lost_or_corrupted=0, **outputs,
    )  # fmt: skip
