"""Composition root: the one faust App, built from settings. Everything else imports it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.admin import NewTopic
from mode.utils.times import want_seconds

from statekeeper import faust_fixes
from statekeeper.connections import faust_credentials
from statekeeper.settings import Settings, get_settings
from statekeeper.topics.admin import ensure_topics
from statekeeper.topics.definitions_file import publish_definitions_file
from statekeeper.topics.names import TopicNames

logger = logging.getLogger(__name__)


class StatekeeperApp(faust.App):
    """faust.App that creates the contract's topics before its consumer subscribes."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings.app_id, **kwargs)
        self.settings = settings
        self.topic_names = TopicNames(settings.topic_prefix)
        # Extra conditions for readiness, e.g. "workflow definitions loaded".
        self.ready_conditions: list[Callable[[], bool]] = []

    async def on_first_start(self) -> None:
        await ensure_topics(self.settings, self.topic_names, self._internal_topics())
        published = await publish_definitions_file(self.settings, self.topic_names)
        if published:
            logger.info(
                "published %d workflow definitions from %s",
                published,
                self.settings.definitions_file,
            )
        await super().on_first_start()

    def _internal_topics(self) -> list[NewTopic]:
        """faust's leader topic and the tables' changelogs, as faust would create them."""
        leader = f"{self.settings.app_id}-__assignor-__leader"
        topics = [NewTopic(leader, 1, self.settings.replication_factor)]
        for table in self.tables.values():
            changelog = table.changelog_topic
            policy = ",".join(
                p for p, on in (("compact", changelog.compacting), ("delete", changelog.deleting))
                if on
            )  # fmt: skip
            config = {"cleanup.policy": policy} if policy else {}
            if changelog.retention is not None:
                config["retention.ms"] = str(int(want_seconds(changelog.retention) * 1000))
            topics.append(
                NewTopic(
                    changelog.get_topic_name(),
                    changelog.partitions or self.settings.partitions,
                    self.settings.replication_factor,
                    topic_configs=config,
                )
            )
        return topics

    def rocksdb_options(self) -> dict[str, Any]:
        """Per-partition RocksDB memory, bounded (faust's defaults are 2 GiB of cache)."""
        s = self.settings
        return {
            "driver": "rocksdict",
            "block_cache_size": s.rocksdb_block_cache_mb * 2**20,
            "write_buffer_size": s.rocksdb_write_buffer_mb * 2**20,
            "max_write_buffer_number": 2,
            "max_open_files": s.rocksdb_max_open_files,
        }

    def is_ready(self) -> bool:
        """Tables recovered and no rebalance under way."""
        recovery = self.tables.recovery  # type: ignore[attr-defined]
        if not recovery.completed.is_set() or self.rebalancing:
            return False
        return all(condition() for condition in self.ready_conditions)


def create_app(settings: Settings) -> StatekeeperApp:
    """Build the App from settings (no agents or views yet; see :mod:`statekeeper.worker`)."""
    faust_fixes.install()
    servers = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]
    return StatekeeperApp(
        settings,
        broker=servers,
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        autodiscover=False,
        datadir=str(settings.worker_data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=settings.table_standby_replicas,
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.canonical_url,
        web_enabled=True,
        web_application_options={"client_max_size": settings.max_body_bytes},
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 5, 0.5),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=10,
        table_cleanup_interval=5.0,
    )


app = create_app(get_settings())
