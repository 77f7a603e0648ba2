"""``statekeeper infra up|down|status``: local Kafka and Redis for development and tests."""

from __future__ import annotations

import argparse
import logging
import sys

from statekeeper.exceptions import InfraError
from statekeeper.infra import kafka, redis
from statekeeper.settings import get_settings


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="statekeeper infra")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start local Kafka and Redis unless configured elsewhere")
    up.add_argument("--no-kafka", action="store_true")
    up.add_argument("--no-redis", action="store_true")
    down = commands.add_parser("down", help="stop what `up` started")
    down.add_argument("--wipe", action="store_true", help="also delete the broker's data")
    commands.add_parser("status", help="what is running")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # probes fail while starting
    settings = get_settings()
    try:
        if args.command == "up":
            if not args.no_kafka:
                kafka.ensure_running(settings, say=_say)
            if not args.no_redis:
                redis.ensure_running(settings, say=_say)
        elif args.command == "down":
            _say(kafka.stop(settings, wipe=args.wipe))
            _say(redis.stop(settings))
        else:
            _say(kafka.status(settings))
            _say(redis.status(settings))
    except InfraError as exc:
        print(f"statekeeper infra: {exc}", file=sys.stderr)
        return 1
    return 0
