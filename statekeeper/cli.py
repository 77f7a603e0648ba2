"""The ``statekeeper`` command line: run the worker, manage local infrastructure, operate.

Operator commands (define, send, get, history, counts, tail, redrive, rebuild) live in
``statekeeper/ops/``; they print readable text, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from aiokafka.errors import KafkaError

from statekeeper.client.exceptions import ClientError
from statekeeper.exceptions import StatekeeperError


def _worker(_: argparse.Namespace) -> int:
    """Run one worker (agents, tables, web API) in the foreground."""
    from faust import Worker

    from statekeeper.web.api import generated_dev_key
    from statekeeper.worker import load

    app = load()
    settings = app.settings
    print(f"statekeeper worker: kafka {settings.bootstrap_servers}, web {settings.canonical_url}")
    if generated_dev_key is not None:
        print(f"no STATEKEEPER_API_KEYS set: tenant 'dev' has API key {generated_dev_key}")
        print(
            f"  try: curl -H 'Authorization: Bearer {generated_dev_key}' "
            f"{settings.canonical_url}/v1/workflows/<item>"
        )
    sys.stdout.flush()
    # faust runs a full garbage collection per table on every rebalance and stop (~0.1 s
    # each with 17 tables); what was loaded so far is there for good, so leave it out.
    gc.freeze()
    worker = Worker(app, loglevel=settings.log_level)
    # faust's terminal spinner sets the root logger to DEBUG (to spin on every record), so
    # every debug call in faust and aiokafka builds a LogRecord: ~8% of the worker's time.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def _run(args: argparse.Namespace) -> int:
    """Start local Kafka and Redis unless configured elsewhere, then the worker."""
    from statekeeper.infra.cli import main as infra_main

    code = infra_main(["up"])
    if code != 0:
        return code
    return _worker(args)


def _infra(args: argparse.Namespace) -> int:
    from statekeeper.infra.cli import main as infra_main

    return infra_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statekeeper", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="run a worker").set_defaults(func=_worker)
    commands.add_parser(
        "run", help="start local Kafka and Redis if needed, then a worker"
    ).set_defaults(func=_run)
    infra = commands.add_parser("infra", help="local Kafka and Redis: up, down, status")
    infra.add_argument("rest", nargs=argparse.REMAINDER)
    infra.set_defaults(func=_infra)
    _register_operator_commands(commands)
    return parser


def _register_operator_commands(commands: Any) -> None:
    from statekeeper.ops import events, queries, rebuild, redrive

    for module in (events, queries, redrive, rebuild):
        module.register(commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ClientError, KafkaError) as exc:  # the API or the broker refused: not a usage error
        print(f"statekeeper: {exc}", file=sys.stderr)
        return 1
    except StatekeeperError as exc:
        print(f"statekeeper: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
