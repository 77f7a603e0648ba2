"""The broker stops and starts again in the middle of a run: nothing is lost.

Never the shared broker on 9092 (other test runs use it): a private single-node broker on free
ports, its data under tmp_path, started through statekeeper.infra.kafka with the jars the
repository already cached (``var/kafka/libs-<version>``, linked, not downloaded again).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeeper.infra import kafka
from statekeeper.infra.process import port_open
from statekeeper.settings import LOCAL_KAFKA_HOST, Settings
from tests.integration.conftest import Deployment
from tests.support.mixed_model import MixedStream, mixed_stream
from tests.support.worker import free_port, wait_for
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


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Settings]:
    """Settings of a private broker (its own ports and var dir), started; wiped after."""
    shared = kafka.paths_for(Settings(kafka_bootstrap=None))
    if not shared.libs_complete.exists():
        pytest.skip(f"no cached Kafka jars in {shared.libs} (run `make infra-up` once)")
    settings = Settings(
        kafka_bootstrap=None, var_dir=tmp_path / "private-var", kafka_heap="384m",
        local_kafka_port=free_port(), local_kafka_controller_port=free_port(),
    )  # fmt: skip
    paths = kafka.paths_for(settings)
    paths.root.mkdir(parents=True)
    paths.libs.symlink_to(shared.libs, target_is_directory=True)
    kafka.ensure_running(settings)
    try:
        yield settings
    finally:
        kafka.stop(settings, wipe=True)


@pytest.mark.timeout(500)
async def test_broker_restart_mid_stream_loses_nothing(
    deployment: Deployment, private_broker: Settings, figures: dict[str, Any]
) -> None:
    bootstrap = private_broker.bootstrap_servers
    stream = mixed_stream(random.Random(4242), 6000)
    half = len(stream.events) // 2
    worker = start_worker(deployment, STATEKEEPER_KAFKA_BOOTSTRAP=bootstrap)
    await define_rework(bootstrap, deployment)
    await send_mixed(bootstrap, deployment, MixedStream(stream.events[:half], stream.model))
    wait_for(lambda: progress(worker) >= 500, timeout=120, interval=0.05)

    kafka.stop(private_broker)  # SIGTERM, as an operator's restart
    port = private_broker.local_kafka_port
    wait_for(lambda: not port_open(LOCAL_KAFKA_HOST, port), timeout=60)
    down_at = time.monotonic()
    kafka.ensure_running(private_broker)
    downtime = time.monotonic() - down_at
    await send_mixed(bootstrap, deployment, MixedStream(stream.events[half:], stream.model))

    await wait_committed(bootstrap, deployment, timeout=300)
    assert worker.process is not None and worker.process.poll() is None, "the worker died"
    await wait_notices(bootstrap, deployment, stream.model)
    compared = check_state(worker.url, stream.model)
    outputs = await check_outputs(bootstrap, deployment, stream.model)
    figures.update(
        fault="private broker stopped and restarted mid-stream", events=len(stream.events),
        broker_down_s=round(downtime, 1), entities=compared, lost_or_corrupted=0, **outputs,
    )  # fmt: skip
