"""Production connections: Kafka security and Redis TLS/password options from settings."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from statekeeper.connections import faust_credentials, kafka_options, redis_options
from statekeeper.exceptions import ConfigError
from statekeeper.settings import Settings

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def test_plaintext_needs_nothing() -> None:
    settings = Settings(kafka_bootstrap="k1:9092,k2:9092")
    assert kafka_options(settings) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None


@pytest.mark.skipif(not SYSTEM_CA.exists(), reason="needs a CA bundle to load")
def test_sasl_ssl_scram_with_a_custom_ca_reaches_every_client() -> None:
    settings = Settings(
        kafka_bootstrap="broker.example:9096",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-statekeeper",
        kafka_sasl_password="s3cret-pass-word",  # type: ignore[arg-type]
        kafka_ssl_cafile=SYSTEM_CA,
    )
    options = kafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "svc-statekeeper",
        "s3cret-pass-word",
    )
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret" not in repr(credentials)
    assert "s3cret" not in repr(settings)


def test_sasl_without_a_password_is_a_clear_error() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="svc")
    with pytest.raises(ConfigError, match="STATEKEEPER_KAFKA_SASL_PASSWORD"):
        kafka_options(settings)


def test_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="TLS files"):
        kafka_options(settings)


def test_redis_password_and_ca_never_show_in_repr() -> None:
    settings = Settings(
        redis_url="rediss://:url-secret-pw@cache.example:6380/0",  # type: ignore[arg-type]
        redis_password="other-secret-pw",  # type: ignore[arg-type]
        redis_ca_file=SYSTEM_CA,
    )
    assert redis_options(settings) == {
        "password": "other-secret-pw",
        "ssl_ca_certs": str(SYSTEM_CA),
    }
    assert settings.effective_redis_url.startswith("rediss://")
    assert "secret" not in repr(settings)


def test_a_ca_file_needs_tls() -> None:
    settings = Settings(redis_url="redis://cache:6379/0", redis_ca_file=SYSTEM_CA)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rediss://"):
        redis_options(settings)
