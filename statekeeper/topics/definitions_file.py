"""Workflow definitions from a YAML or TOML file, published at worker start.

The file is a convenience: its definitions are sent as ordinary ``workflow.define`` events,
so they are validated, shared and versioned exactly like ones a user produces. A file
with an invalid definition stops the worker with a message naming it::

    tenant: acme                 # default for workflows without their own
    workflows:
      - name: invoice
        states: [draft, sent, paid]
        initial: draft
        terminal: [paid]
        transitions: [[draft, sent], [sent, paid]]
        sla_seconds: {sent: 86400}
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer

from statekeeper import codec
from statekeeper.connections import kafka_options
from statekeeper.exceptions import ConfigError
from statekeeper.settings import Settings
from statekeeper.stores.definitions import parse_definition
from statekeeper.topics.envelope import validate_envelope
from statekeeper.topics.names import TopicNames
from statekeeper.topics.rejections import Rejected


def read_definitions_file(path: Path) -> list[dict[str, Any]]:
    """The ``workflow.define`` envelopes of a definitions file; ConfigError if it is wrong."""
    try:
        text = path.read_text()
        document = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read definitions file {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("workflows"), list):
        raise ConfigError(f"{path}: expected a map with a 'workflows' list")
    return [_envelope(path, document, entry) for entry in document["workflows"]]


def _envelope(path: Path, document: dict[str, Any], entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"{path}: every workflow needs a 'name'")
    data = {k: v for k, v in entry.items() if k not in ("name", "tenant")}
    tenant = entry.get("tenant", document.get("tenant"))
    digest = hashlib.sha256(codec.pack([tenant, entry["name"], data])).hexdigest()[:24]
    envelope = {
        "v": 1,
        "id": f"file-{digest}",
        "type": "workflow.define",
        "tenant": tenant,
        "key": entry["name"],
        "ts": int(time.time() * 1000),
        "data": data,
    }
    try:
        validate_envelope(envelope, types=frozenset({"workflow.define"}))
        parse_definition(str(tenant), entry["name"], data)
    except Rejected as rejection:
        raise ConfigError(f"{path}: workflow {entry['name']!r}: {rejection.detail}") from None
    return envelope


async def publish_definitions_file(settings: Settings, names: TopicNames) -> int:
    """Send the file's definitions to the definitions topic; returns how many."""
    if settings.definitions_file is None:
        return 0
    envelopes = read_definitions_file(settings.definitions_file)
    producer = AIOKafkaProducer(**kafka_options(settings))
    await producer.start()
    try:
        for envelope in envelopes:
            key = f"{envelope['tenant']}/{envelope['key']}".encode()
            await producer.send_and_wait(
                names.workflow_definitions, key=key, value=codec.pack(envelope)
            )
    finally:
        await producer.stop()
    return len(envelopes)
