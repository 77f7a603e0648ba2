"""The three examples in examples/ run as a newcomer would run them, against a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ACME_KEY, Deployment

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(dep: Deployment, url: str, name: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / name),
            "--bootstrap",
            dep.bootstrap,
            "--url",
            url,
            "--api-key",
            ACME_KEY,
            "--tenant",
            "acme",
            "--topic-prefix",
            dep.prefix,
        ],  # fmt: skip
        env={k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_the_examples_run_and_say_what_they_did(deployment: Deployment) -> None:
    worker = deployment.start()

    invoice = run_example(deployment, worker.url, "invoice.py")
    assert "now: sent / failed (payment gateway timed out)" in invoice
    assert "now: paid / completed, attempt 2" in invoice
    assert "5 changes" in invoice
    assert "v5: sent -> paid [completed] card charged" in invoice

    signup = run_example(deployment, worker.url, "signup.py")
    assert "read back: step confirm" in signup and "'terms_accepted': True" in signup
    assert "closed: reason=ended" in signup and "'city': 'London'" in signup

    chat = run_example(deployment, worker.url, "chat.py")
    relevant = [line for line in chat.splitlines() if line.strip().startswith("relevant")]
    assert any("[conv-a]" in line and "vegetarian" in line for line in relevant), chat
    recent = [line for line in chat.splitlines() if line.strip().startswith("recent")]
    assert recent and all("[conv-b]" in line for line in recent)
