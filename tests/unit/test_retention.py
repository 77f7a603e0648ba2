"""Retention policies: one setting, most specific pattern wins, defaults per kind."""

from __future__ import annotations

import pytest

from statekeeper.exceptions import ConfigError
from statekeeper.stores.retention import DEFAULTS, FOREVER, Retention, parse_retention


def test_empty_setting_gives_the_built_in_defaults() -> None:
    policies = parse_retention("")

    assert policies.policy_for("acme", "workflow") == DEFAULTS["workflow"]
    assert policies.policy_for("acme", "workflow").max_age_ms == 30 * 86_400_000
    assert policies.policy_for("acme", "something-new") == FOREVER
    assert FOREVER.keeps_forever


def test_compact_list_with_units_and_options() -> None:
    policies = parse_retention(
        "*/workflow=30d, acme/workflow=7d , */conversation=90d;items=2000;bytes=5MB,"
        "acme/cache=1h, globex/*=forever, */session=500ms"
    )

    assert policies.policy_for("acme", "workflow") == Retention(max_age_s=7 * 86_400)
    assert policies.policy_for("initech", "workflow") == Retention(max_age_s=30 * 86_400)
    assert policies.policy_for("acme", "conversation") == Retention(
        max_age_s=90 * 86_400, max_items=2000, max_bytes=5 * 2**20
    )
    assert policies.policy_for("acme", "cache").max_age_ms == 3_600_000
    assert policies.policy_for("acme", "session").max_age_ms == 500
    assert policies.policy_for("globex", "workflow") == FOREVER  # tenant/* beats */kind


def test_precedence_tenant_kind_then_tenant_then_kind_then_any() -> None:
    policies = parse_retention("*/*=1d, */cache=2h, acme/*=3h, acme/cache=4h")

    assert policies.policy_for("acme", "cache").max_age_s == 4 * 3600
    assert policies.policy_for("acme", "workflow").max_age_s == 3 * 3600
    assert policies.policy_for("globex", "cache").max_age_s == 2 * 3600
    assert policies.policy_for("globex", "workflow").max_age_s == 86_400
    assert policies.policy_for("globex", "unknown-kind").max_age_s == 86_400


def test_json_form_is_equivalent() -> None:
    policies = parse_retention(
        '{"*/conversation": {"max_age": "90d", "max_items": 100, "max_bytes": "64KB"},'
        ' "acme/workflow": "12s", "acme/cache": 30}'
    )

    assert policies.policy_for("x", "conversation") == Retention(90 * 86_400, 100, 65_536)
    assert policies.policy_for("acme", "workflow").max_age_ms == 12_000
    assert policies.policy_for("acme", "cache").max_age_s == 30


@pytest.mark.parametrize(
    "spec",
    [
        "workflow=30d",  # no tenant
        "acme/workflow",  # no policy
        "Acme/workflow=1d",  # not a tenant name
        "acme/workflow=30 days",
        "acme/workflow=1d;items=0",
        "acme/workflow=1d;rows=5",
        "*/conversation=1d;bytes=lots",
        "{not json",
        '["acme/workflow", "1d"]',
        '{"acme/workflow": {"max_age": "1d", "ttl": 5}}',
        '{"acme/workflow": true}',
    ],
)
def test_bad_settings_are_refused_with_a_message(spec: str) -> None:
    with pytest.raises(ConfigError, match="STATEKEEPER_RETENTION"):
        parse_retention(spec)


def test_settings_refuse_a_bad_policy_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from statekeeper.settings import Settings

    monkeypatch.setenv("STATEKEEPER_RETENTION", "acme/workflow=soon")
    with pytest.raises(ConfigError):
        Settings()
    monkeypatch.setenv("STATEKEEPER_RETENTION", "acme/workflow=2s")
    assert Settings().retention == "acme/workflow=2s"


def test_a_finished_item_is_purged_from_when_it_finished() -> None:
    from statekeeper.stores.workflow import Item, purge_deadline

    active = Item("acme", "inv-1", "invoice", "sent", "active", 2, 1, 0, 10, 10)
    done = active.evolve(state="paid", condition="completed", version=3, updated_at=500)
    stored = done.evolve(purge_at=purge_deadline(active, done, 60))
    annotated = stored.evolve(version=4, updated_at=900)

    assert purge_deadline(None, active, 60) is None
    assert stored.purge_at == 560
    assert purge_deadline(stored, annotated, 60) == 560  # an annotation does not move it
    assert purge_deadline(active, done, None) is None  # kept forever
    assert Item.from_bytes(annotated.to_bytes()) == annotated
