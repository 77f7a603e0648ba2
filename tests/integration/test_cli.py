"""The operator command line against a real worker: send, get, tail, redrive, rebuild."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ACME_KEY, Deployment
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

DEFINITIONS = """\
tenant: acme
workflows:
  - name: invoice
    states: [draft, sent, paid]
    initial: draft
    terminal: [paid]
    transitions: [[draft, sent], [sent, paid]]
"""


def cli(dep: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **dep.env, "STATEKEEPER_API_KEY": ACME_KEY}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_json(dep: Deployment, *args: str) -> Any:
    done = cli(dep, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def tail_json(dep: Deployment, *args: str) -> list[dict[str, Any]]:
    done = cli(dep, "tail", *args, "--until-end", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def test_a_dead_lettered_start_is_redriven_after_the_definition_arrives(
    deployment: Deployment, tmp_path: Path
) -> None:
    worker = deployment.start()
    url = ("--url", worker.url)
    sent = cli_json(
        deployment, "send", "workflow.start", "inv-1", "--data", '{"workflow": "invoice"}',
        "--tenant", "acme", "--id", "start-1",
    )  # fmt: skip
    assert [(s["id"], s["topic"]) for s in sent] == [
        ("start-1", deployment.topic("workflow.events"))
    ]
    dead = wait_for(lambda: tail_json(deployment, "deadletter"), timeout=60)
    assert [(d["value"]["reason"], d["value"]["event"]["id"]) for d in dead] == [
        ("unknown_workflow", "start-1")
    ]
    missing = cli(deployment, "get", "inv-1", *url, "--json")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr

    plan = cli_json(deployment, "redrive", "--reason", "unknown_workflow", "--dry-run")
    assert plan["dry_run"] and plan["sent"] == 0 and plan["skipped"] == 0
    assert [(c["id"], c["key"], c["topic"]) for c in plan["selected"]] == [
        ("start-1", "inv-1", deployment.topic("workflow.events"))
    ]
    assert cli(deployment, "get", "inv-1", *url).returncode == 1  # a dry run sends nothing

    definitions = tmp_path / "workflows.yaml"
    definitions.write_text(DEFINITIONS)
    assert len(cli_json(deployment, "define", str(definitions))) == 1
    done = cli_json(deployment, "redrive", "--reason", "unknown_workflow")
    assert (done["dry_run"], done["sent"]) == (False, 1)
    item = wait_for(lambda: _get(deployment, worker.url, "inv-1"), timeout=60)
    assert (item["state"], item["version"]) == ("draft", 1)

    # Redriving the same dead letter again: its id was applied, so it has no effect.
    assert cli_json(deployment, "redrive", "--key", "inv-1")["sent"] == 1
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "workflow.transition", "key": "inv-1", "data": {"to": "sent"}}\n'
        "# comments and blank lines are skipped\n\n"
        '{"type": "workflow.transition", "key": "inv-1", "data": {"to": "paid"}, "id": "pay-1"}\n'
    )
    sent = cli_json(deployment, "send", "--file", str(events), "--tenant", "acme")
    assert len(sent) == 2 and sent[1]["id"] == "pay-1"
    wait_for(lambda: (_get(deployment, worker.url, "inv-1") or {}).get("state") == "paid", 60)
    history = cli_json(deployment, "history", "inv-1", *url)["history"]
    assert [(h["to"], h["event_id"]) for h in history] == [
        ("draft", "start-1"),
        ("sent", sent[0]["id"]),
        ("paid", "pay-1"),
    ]
    counts = cli_json(deployment, "counts", *url)
    assert counts["invoice"]["states"] == {"draft": 0, "sent": 0, "paid": 1}
    changes = tail_json(deployment, "status", "--workflow", "invoice")
    assert [c["value"]["to"] for c in changes] == ["draft", "sent", "paid"]
    readable = cli(deployment, "tail", "status", "--until-end", "--state", "paid")
    assert "acme/inv-1 invoice: sent -> paid [completed] v3" in readable.stdout
    readable = cli(deployment, "history", "inv-1", *url)
    assert readable.returncode == 0 and "completed" in readable.stdout

    # Bad input is refused before anything is sent.
    refused = cli(deployment, "send", "workflow.start", "x", "--data", "[1]", "--tenant", "acme")
    assert refused.returncode == 2 and "expected a JSON object" in refused.stderr


async def test_rebuild_refuses_a_running_worker_then_tables_come_back(
    deployment: Deployment,
) -> None:
    worker = deployment.start("w0")
    data_dir = str(deployment.root / "w0")
    definition = json.dumps(
        {"states": ["a", "b"], "initial": "a", "terminal": ["b"], "transitions": [["a", "b"]]}
    )
    cli_json(
        deployment, "send", "workflow.define", "flow", "--data", definition, "--tenant", "acme"
    )
    data = '{"workflow": "flow"}'
    cli_json(deployment, "send", "workflow.start", "it-1", "--data", data, "--tenant", "acme")
    wait_for(lambda: _get(deployment, worker.url, "it-1"), timeout=60)

    assert "workflow-items" in cli_json(deployment, "rebuild", "--list", "--data-dir", data_dir)
    refused = cli(deployment, "rebuild", "workflow-items", "--data-dir", data_dir)
    assert refused.returncode == 2 and "stop it first" in refused.stderr

    worker.stop()
    done = cli_json(deployment, "rebuild", "workflow-items", "--data-dir", data_dir)
    assert done["deleted"] and not any(Path(p).exists() for p in done["deleted"])
    again = deployment.start("w0")
    item = wait_for(lambda: _get(deployment, again.url, "it-1"), timeout=60)
    assert (item["state"], item["version"]) == ("a", 1)


def _get(dep: Deployment, url: str, item: str) -> dict[str, Any] | None:
    done = cli(dep, "get", item, "--url", url, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None
