"""A Redis for statekeeper: a configured one, a reachable local one, or Debian's redis-server
started on loopback under ``<var_dir>/redis``."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import redis

from statekeeper.connections import redis_options
from statekeeper.exceptions import InfraError
from statekeeper.infra.process import port_open, read_pid, spawn, tail, terminate
from statekeeper.settings import Settings

logger = logging.getLogger(__name__)

PID_MARKER = "redis-server"
START_TIMEOUT_S = 15.0


def _root(settings: Settings) -> Path:
    return settings.var_dir.resolve() / "redis"


def answers_ping(url: str, timeout: float = 1.0, **options: Any) -> bool:
    """True when the Redis at ``url`` answers PING (``options``: password, TLS CA)."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def find_redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise InfraError(
            "redis-server not found: apt-get update && apt-get install -y redis-server, "
            "or set STATEKEEPER_REDIS_URL to an existing Redis"
        )
    return found


def ensure_running(settings: Settings, say: Any = logger.info) -> str:
    """A Redis URL that answers PING, starting a local redis-server if none is reachable."""
    url = settings.effective_redis_url
    if settings.redis_url:
        if not answers_ping(url, **redis_options(settings)):
            raise InfraError("the Redis at STATEKEEPER_REDIS_URL does not answer PING")
        say("redis: using the configured STATEKEEPER_REDIS_URL")
        return url
    port = settings.local_redis_port
    if answers_ping(url):
        say(f"redis: reusing {url}")
        return url
    if port_open("127.0.0.1", port):
        raise InfraError(
            f"port {port} is taken by a program that is not Redis; "
            "set STATEKEEPER_LOCAL_REDIS_PORT or STATEKEEPER_REDIS_URL"
        )
    server = find_redis_server()
    root = _root(settings)
    root.mkdir(parents=True, exist_ok=True)
    command = [
        server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
        "--daemonize", "no", "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        "--logfile", str(root / "redis.log"),
    ]  # fmt: skip
    process = spawn(command, root / "redis.out", root / "redis.pid")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if answers_ping(url):
            say(f"redis: started {url}, data in {root}")
            return url
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise InfraError("redis-server did not start:\n" + tail(root / "redis.log"))


def stop(settings: Settings) -> str:
    """Stop the redis-server we started (never another one)."""
    pid_file = _root(settings) / "redis.pid"
    pid = read_pid(pid_file, PID_MARKER)
    if pid is not None:
        terminate(pid)
    pid_file.unlink(missing_ok=True)
    return f"redis: stopped (pid {pid})" if pid else "redis: not running (nothing of ours to stop)"


def status(settings: Settings) -> str:
    url = settings.effective_redis_url
    pid = read_pid(_root(settings) / "redis.pid", PID_MARKER)
    if pid is not None:
        return f"redis: running {url} (pid {pid})"
    if answers_ping(url):
        return f"redis: reachable {url} (not started by us)"
    return f"redis: stopped ({url})"
