"""The one place that reads the environment.

Every knob is a ``STATEKEEPER_*`` variable; the README lists them with their defaults.
Settings are frozen and read once per process (:func:`get_settings`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from statekeeper.exceptions import ConfigError

_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

LOCAL_KAFKA_HOST = "127.0.0.1"


class Settings(BaseSettings):
    """Typed, immutable configuration of one statekeeper process."""

    model_config = SettingsConfigDict(env_prefix="STATEKEEPER_", frozen=True, extra="ignore")

    # --- where the parts are -------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers. Unset: a local broker on 127.0.0.1 is started "
        "by `statekeeper infra up` / `make run`.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL. Unset: a reachable Redis on 127.0.0.1 is reused, else a local "
        "redis-server is started.",
    )
    # --- production connections (statekeeper/connections.py) ------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle of the brokers")
    kafka_ssl_certfile: Path | None = Field(default=None, description="client certificate")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="client key")
    redis_password: SecretStr | None = Field(default=None, description="if not in the URL")
    redis_ca_file: Path | None = Field(default=None, description="CA of a rediss:// Redis")

    local_kafka_port: int = 9092
    local_kafka_controller_port: int = 9093
    local_redis_port: int = 6379
    kafka_version: str = "4.4.0"
    kafka_heap: str = "512m"
    var_dir: Path = Path("var")

    # --- the worker ----------------------------------------------------------------------
    app_id: str = "statekeeper"
    store: str = Field(default="rocksdb://", description="faust table store URL")
    topic_prefix: str = ""
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    table_standby_replicas: int = Field(default=1, ge=0)
    restore_min_records: int = Field(
        default=2000,
        ge=1,
        description="a table partition this far behind its changelog is restored in bulk",
    )
    data_dir: Path | None = Field(
        default=None, description="RocksDB data dir; default `<var_dir>/worker-<web_port>`."
    )
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_canonical_url: str | None = None
    sla_check_interval_s: float = Field(default=1.0, gt=0)
    definitions_file: Path | None = Field(
        default=None, description="YAML or TOML file of workflow definitions loaded at start"
    )
    session_timeout_s: float = Field(default=15.0, gt=0)
    log_level: str = "info"
    native: bool = Field(
        default=True,
        description="workflow events through the compiled core (statekeeper-native) when it "
        "is installed; false: the pure-Python path for every event",
    )

    # --- input limits --------------------------------------------------------------------
    max_event_bytes: int = Field(default=1024 * 1024, ge=256)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # --- RocksDB memory per partition DB (faust's defaults are 2 GiB cache, 64 MiB buffers)
    rocksdb_block_cache_mb: int = Field(default=16, ge=1)
    rocksdb_write_buffer_mb: int = Field(default=8, ge=1)
    rocksdb_max_open_files: int = Field(default=256, ge=16)

    # --- caching (stores/cache.py, agents/cache_invalidation.py) ---------------------------
    cache_ttl_s: float = Field(default=60.0, gt=0, description="default TTL of cached reports")
    cache_ttl_jitter: float = Field(
        default=0.1, ge=0, lt=1, description="TTL is shortened by up to this fraction, at random"
    )
    cache_stale_s: float = Field(
        default=300.0,
        ge=0,
        description="how long past its TTL a value is served while one refresh runs",
    )
    cache_lock_timeout_s: float = Field(
        default=30.0, gt=0, description="single-flight lock lease; waiters retry after it"
    )
    cache_invalidation_debounce_s: float = Field(default=0.25, ge=0)
    cache_redis_timeout_s: float = Field(default=0.5, gt=0)
    cache_breaker_retry_s: float = Field(default=3.0, gt=0)
    cache_redis_max_connections: int = Field(default=32, ge=1)

    # --- lifecycle: resources, expiry, retention (stores/lifecycle.py, stores/retention.py)
    lifecycle_check_interval_s: float = Field(
        default=0.5, gt=0, description="how often each worker expires due resources and purges"
    )
    lifecycle_batch: int = Field(
        default=500, ge=1, description="most expiries or purges per partition per tick"
    )
    retention: str = Field(
        default="", description="retention policies per tenant/kind (stores/retention.py)"
    )

    @field_validator("retention")
    @classmethod
    def _retention_parses(cls, value: str) -> str:
        from statekeeper.stores.retention import parse_retention

        parse_retention(value)  # fail at start, not at the first purge
        return value

    # --- session memory (topics/session.py, stores/session.py, agents/session.py) ---------
    session_check_interval_s: float = Field(
        default=0.5, gt=0, description="how often each worker closes due sessions"
    )
    session_max_fields: int = Field(
        default=256, ge=1, description="most data fields a session holds"
    )
    session_max_bytes: int = Field(
        default=64 * 1024, ge=256, description="largest session data (msgpack bytes)"
    )
    session_closed_retention_s: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        description="how long a closed session id is remembered (its events: session_closed)",
    )
    session_expiry_batch: int = Field(
        default=2000, ge=1, description="most session deadlines handled per partition per tick"
    )

    # --- conversation memory (topics/conversation.py, stores/conversation.py, agents/...) --
    conversation_token_counter: str = Field(
        default="statekeeper.stores.tokens:RegexTokenCounter",
        description="importable class counting tokens of messages sent without `tokens`",
    )
    conversation_summarizer: str = Field(
        default="statekeeper.stores.summary:ExtractiveSummarizer",
        description="importable class summarizing older turns (stores/summary.py Summarizer)",
    )
    conversation_turn_overhead_tokens: int = Field(
        default=4, ge=0, description="tokens each included turn (and the summary) costs extra"
    )
    conversation_relevant_share: float = Field(default=0.25, ge=0, le=0.5)
    conversation_summary_share: float = Field(default=0.15, ge=0, le=0.5)
    conversation_summary_ttl_s: float = Field(
        default=3600.0, gt=0, description="how long a cached summary stays fresh"
    )
    conversation_summary_max_turns: int = Field(
        default=2000, ge=1, description="most older turns one summary reads (the newest ones)"
    )
    conversation_max_tokens_per_user: int | None = Field(
        default=None, ge=1, description="retention by size in tokens, beside STATEKEEPER_RETENTION"
    )
    conversation_check_interval_s: float = Field(
        default=1.0, gt=0, description="how often each worker enforces conversation retention"
    )

    # --- dashboard (web/dashboard.py) ---------------------------------------------------
    dashboard_tick_s: float = Field(
        default=5.0, gt=0, description="how often the dashboard stream sends a snapshot tick"
    )
    dashboard_queue_size: int = Field(
        default=256, ge=1, description="status changes buffered per dashboard; oldest dropped"
    )

    # --- security ------------------------------------------------------------------------
    api_keys: SecretStr | None = Field(
        default=None,
        description='"tenant:key,tenant2:key2:ro" (`:ro`: read-only). Unset: a `dev` tenant '
        "with a generated key, printed at start-up.",
    )

    # --- client and command line (statekeeper/cli.py, statekeeper/ops/) -------------------
    cli_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STATEKEEPER_API_KEY", "STATEKEEPER_CLI_API_KEY"),
        description="API key the command line sends (default: the dev key in <var>/dev-api-key)",
    )
    cli_url: str | None = Field(
        default=None, description="worker URL the command line asks (default: canonical_url)"
    )
    cli_tenant: str = Field(default="dev", description="tenant of events the command line sends")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError("topic prefix may hold only letters, digits, '.', '_' and '-'")
        return value

    # --- derived values ------------------------------------------------------------------
    @property
    def uses_local_kafka(self) -> bool:
        """True when no external broker was configured, so ours is started on loopback."""
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{LOCAL_KAFKA_HOST}:{self.local_kafka_port}"

    @property
    def effective_redis_url(self) -> str:
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return f"redis://127.0.0.1:{self.local_redis_port}/0"

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir or self.var_dir / f"worker-{self.web_port}"

    @property
    def canonical_url(self) -> str:
        return self.web_canonical_url or f"http://{self.web_host}:{self.web_port}"

    def tenant_keys(self) -> dict[str, Grant]:
        """Map of API key -> its grant, parsed from ``api_keys`` (empty when unset)."""
        if self.api_keys is None:
            return {}
        return parse_api_keys(self.api_keys.get_secret_value())


class Grant(NamedTuple):
    """What one API key may do: read (and, unless read-only, write) one tenant's data."""

    tenant: str
    read_only: bool = False


def parse_api_keys(spec: str) -> dict[str, Grant]:
    """Parse ``"tenant:key,tenant2:key2:ro"`` into ``{key: Grant}``; errors never echo a key.

    A trailing ``:ro`` makes a key read-only: it may query but not ``POST /v1/events``.
    """
    keys: dict[str, Grant] = {}
    for position, pair in enumerate(p.strip() for p in spec.split(",")):
        if not pair:
            continue
        tenant, sep, key = pair.partition(":")
        read_only = key.endswith(":ro")
        key = key.removesuffix(":ro")
        if not sep or not key:
            raise ConfigError(f"STATEKEEPER_API_KEYS entry {position + 1} is not tenant:key")
        if not _TENANT_RE.match(tenant):
            raise ConfigError(f"STATEKEEPER_API_KEYS entry {position + 1}: bad tenant name")
        if len(key) < 16:
            raise ConfigError(
                f"STATEKEEPER_API_KEYS entry {position + 1}: keys need at least 16 characters"
            )
        keys[key] = Grant(tenant, read_only)
    return keys


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
