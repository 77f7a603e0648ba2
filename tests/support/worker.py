"""Real worker processes for integration tests: start, wait until ready, stop, kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """One ``statekeeper worker`` subprocess with its own web port and data dir."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        # Unbuffered: a SIGKILLed worker must not take its last log lines with it.
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **self.env,
            "STATEKEEPER_WEB_PORT": str(self.port),
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "statekeeper", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def wait_ready(self, timeout: float = 90.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            status, _, _ = http_get(f"{self.url}/readyz")
            if status == 200:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), as an operator would."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash (SIGKILL): no shutdown code runs."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def http_get(url: str, api_key: str | None = None) -> tuple[int, dict[str, str], Any]:
    """GET ``url``; returns (status, headers, decoded JSON or text). Never raises on HTTP codes."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), _decode(reply.read(), reply.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), _decode(err.read(), err.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, None


def _decode(body: bytes, headers: Any) -> Any:
    if "json" in (headers.get("Content-Type") or ""):
        return json.loads(body)
    return body.decode(errors="replace")


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
