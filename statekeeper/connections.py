"""How every client reaches Kafka and Redis: security options built once from settings.

One place turns the ``STATEKEEPER_KAFKA_*`` security settings into what faust
(``broker_credentials``) and plain aiokafka clients (admin, definition follower, feeds)
need, and the Redis settings into redis-py connection options, so a managed Kafka
(SASL_SSL with PLAIN or SCRAM, a custom CA) or a Redis with TLS and a password works for
every part the same way. Secrets stay inside :class:`pydantic.SecretStr` until this module
hands them to a client; nothing here logs them.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from statekeeper.exceptions import ConfigError
from statekeeper.settings import Settings


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (system CAs unless a CA file is set)."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        return create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files: {exc}") from None


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: servers and security."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        username, password = _sasl_login(settings)
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=username,
            sasl_plain_password=password,
        )
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """``broker_credentials`` for the faust App (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        assert context is not None
        return faust.SSLCredentials(context)
    username, password = _sasl_login(settings)
    credentials = faust.SASLCredentials(
        username=username,
        password=password,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )
    return credentials


def _sasl_login(settings: Settings) -> tuple[str, str]:
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        raise ConfigError(
            f"STATEKEEPER_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "STATEKEEPER_KAFKA_SASL_USERNAME and STATEKEEPER_KAFKA_SASL_PASSWORD"
        )
    return settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for redis-py's ``from_url`` beyond the URL itself.

    TLS is chosen by the URL scheme (``rediss://``); a password may be in the URL or in
    ``STATEKEEPER_REDIS_PASSWORD``; ``STATEKEEPER_REDIS_CA_FILE`` names a custom CA.
    """
    options: dict[str, Any] = {}
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_ca_file is not None:
        if not settings.effective_redis_url.startswith("rediss://"):
            raise ConfigError("STATEKEEPER_REDIS_CA_FILE needs a rediss:// STATEKEEPER_REDIS_URL")
        options["ssl_ca_certs"] = str(settings.redis_ca_file)
    return options
