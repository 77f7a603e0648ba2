"""Settings and API keys."""

from __future__ import annotations

import pytest

from statekeeper.exceptions import ConfigError
from statekeeper.settings import Grant, Settings, parse_api_keys
from statekeeper.web.auth import KeyRing


def test_api_keys_parse_to_tenants() -> None:
    keys = parse_api_keys("acme:aaaaaaaaaaaaaaaa, globex:bbbbbbbbbbbbbbbb")
    assert keys == {
        "aaaaaaaaaaaaaaaa": Grant("acme", read_only=False),
        "bbbbbbbbbbbbbbbb": Grant("globex", read_only=False),
    }


def test_ro_suffix_makes_a_key_read_only() -> None:
    keys = parse_api_keys("acme:aaaaaaaaaaaaaaaa:ro,acme:bbbbbbbbbbbbbbbb")
    ring = KeyRing(keys)
    assert ring.grant_for("aaaaaaaaaaaaaaaa") == Grant("acme", read_only=True)
    assert ring.grant_for("aaaaaaaaaaaaaaaa:ro") is None  # the suffix is not part of the key
    assert ring.grant_for("bbbbbbbbbbbbbbbb") == Grant("acme", read_only=False)


@pytest.mark.parametrize("spec", ["acme", "Acme:aaaaaaaaaaaaaaaa", "acme:short"])
def test_bad_api_keys_fail_without_echoing_the_key(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_api_keys(spec)
    assert "aaaaaaaaaaaaaaaa" not in str(caught.value)
    assert "short" not in str(caught.value)


def test_keys_never_appear_in_repr() -> None:
    settings = Settings(api_keys="acme:aaaaaaaaaaaaaaaa")  # type: ignore[arg-type]
    assert "aaaaaaaaaaaaaaaa" not in repr(settings)
    assert "aaaaaaaaaaaaaaaa" not in repr(KeyRing(settings.tenant_keys()))


def test_keyring_maps_keys_to_tenants() -> None:
    ring = KeyRing({"aaaaaaaaaaaaaaaa": "acme"})
    assert ring.tenant_for("aaaaaaaaaaaaaaaa") == "acme"
    assert ring.tenant_for("aaaaaaaaaaaaaaab") is None


def test_local_kafka_unless_configured() -> None:
    assert Settings().uses_local_kafka
    external = Settings(kafka_bootstrap="kafka:9092")
    assert not external.uses_local_kafka
    assert external.bootstrap_servers == "kafka:9092"


def test_topic_prefix_must_be_topic_safe() -> None:
    with pytest.raises(ValueError):
        Settings(topic_prefix="a/b")
