"""Workflow definitions from a file: valid ones become define events, bad ones stop the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from statekeeper.exceptions import ConfigError
from statekeeper.topics.definitions_file import read_definitions_file

YAML = """
tenant: acme
workflows:
  - name: invoice
    states: [draft, sent, paid]
    initial: draft
    terminal: [paid]
    transitions: [[draft, sent], [sent, paid]]
    sla_seconds: {sent: 86400}
  - name: ticket
    tenant: globex
    states: [open, closed]
    initial: open
    terminal: [closed]
    transitions: [[open, closed]]
"""

TOML = """
tenant = "acme"
[[workflows]]
name = "invoice"
states = ["draft", "paid"]
initial = "draft"
terminal = ["paid"]
transitions = [["draft", "paid"]]
"""


def test_yaml_file_becomes_define_envelopes(tmp_path: Path) -> None:
    path = tmp_path / "workflows.yaml"
    path.write_text(YAML)
    first, second = read_definitions_file(path)
    assert (first["tenant"], first["key"], first["type"]) == ("acme", "invoice", "workflow.define")
    assert first["data"]["sla_seconds"] == {"sent": 86400}
    assert (second["tenant"], second["key"]) == ("globex", "ticket")


def test_same_file_gives_same_event_ids(tmp_path: Path) -> None:
    path = tmp_path / "workflows.yaml"
    path.write_text(YAML)
    assert [e["id"] for e in read_definitions_file(path)] == [
        e["id"] for e in read_definitions_file(path)
    ]


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "workflows.toml"
    path.write_text(TOML)
    (only,) = read_definitions_file(path)
    assert only["data"]["transitions"] == [["draft", "paid"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workflows: 3", "'workflows' list"),
        ("tenant: acme\nworkflows: [{states: [a]}]", "needs a 'name'"),
        (
            "tenant: acme\nworkflows: [{name: w, states: [a], initial: b, transitions: []}]",
            "workflow 'w': 'initial'",
        ),
        ("tenant: Bad\nworkflows: [{name: w, states: [a], initial: a, transitions: []}]", "tenant"),
        ("workflows: [", "cannot read"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "workflows.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_definitions_file(path)
