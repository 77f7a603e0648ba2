"""Creating the contract's topics on worker start and checking their partition counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from statekeeper.connections import kafka_options
from statekeeper.exceptions import ConfigError
from statekeeper.settings import Settings
from statekeeper.topics.names import TopicNames

logger = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
_WEEK_MS = 7 * 24 * 3600 * 1000


def topic_configs(names: TopicNames) -> dict[str, dict[str, str]]:
    """Per-topic configs: definitions are compacted, dead letters are kept four weeks."""
    configs: dict[str, dict[str, str]] = {name: {} for name in names.inputs() + names.outputs()}
    configs[names.workflow_definitions] = {"cleanup.policy": "compact"}
    configs[names.deadletter] = {"retention.ms": str(4 * _WEEK_MS)}
    return configs


async def ensure_topics(
    settings: Settings, names: TopicNames, internal: Sequence[NewTopic] = ()
) -> None:
    """Create missing topics; refuse to run against topics with another partition count.

    Tables are co-partitioned with their input topics, so a mismatch would put state
    on the wrong worker; failing fast is the only safe answer. ``internal`` topics (the
    tables' changelogs) are created here too, so that they exist before faust's consumer
    subscribes to them.
    """
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        configs = topic_configs(names)
        new = [
            NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=cfg)
            for name, cfg in configs.items()
        ]
        new.append(
            NewTopic(
                names.accepted_definitions(settings.app_id),
                1,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
        )
        new += internal
        response = await admin.create_topics(new)
        for name, code, *_ in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise ConfigError(f"cannot create topic {name}: Kafka error code {code}")
            if code == 0:
                logger.info("created topic %s", name)
        await _check_partitions(admin, list(names.inputs()), settings.partitions)
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, topics: list[str], expected: int) -> None:
    described = await admin.describe_topics(topics)
    for topic in described:
        count = len(topic.get("partitions", []))
        if count and count != expected:
            raise ConfigError(
                f"topic {topic['topic']} has {count} partitions but STATEKEEPER_PARTITIONS is "
                f"{expected}; set it to {count} (tables are co-partitioned with their topics)"
            )
