"""Options every operator command shares: where Kafka and the API are, which key, output."""

from __future__ import annotations

import argparse
from typing import Any

from statekeeper.client import Producer, QueryClient
from statekeeper.ops.output import Output
from statekeeper.settings import Settings, get_settings
from statekeeper.topics.names import TopicNames


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: from settings)")
    parser.add_argument(
        "--topic-prefix", default=None, help="topic prefix (default: STATEKEEPER_TOPIC_PREFIX)"
    )


def add_http_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="a worker's URL (default: http://127.0.0.1:6066)")
    parser.add_argument(
        "--api-key", help="API key (default: STATEKEEPER_API_KEY, else <var>/dev-api-key)"
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def settings() -> Settings:
    return get_settings()


def kafka_options(args: argparse.Namespace) -> dict[str, Any]:
    """aiokafka keyword arguments: security from settings, servers from --bootstrap if given."""
    from statekeeper.connections import kafka_options as from_settings

    options = from_settings(settings())
    if args.bootstrap:
        options["bootstrap_servers"] = args.bootstrap
    return options


def topics(args: argparse.Namespace) -> TopicNames:
    prefix = args.topic_prefix if args.topic_prefix is not None else settings().topic_prefix
    return TopicNames(prefix)


def producer(args: argparse.Namespace, tenant: str | None = None) -> Producer:
    """A producer for ``tenant`` (default: --tenant, else STATEKEEPER_CLI_TENANT)."""
    chosen = tenant or getattr(args, "tenant", None) or settings().cli_tenant
    return Producer(chosen, topic_prefix=topics(args).prefix, **kafka_options(args))


def query_client(args: argparse.Namespace) -> QueryClient:
    current = settings()
    url = args.url or current.cli_url or current.canonical_url
    return QueryClient(url, api_key(args))


def api_key(args: argparse.Namespace) -> str | None:
    if args.api_key:
        return str(args.api_key)
    current = settings()
    if current.cli_api_key is not None:
        return current.cli_api_key.get_secret_value()
    dev_key = current.var_dir / "dev-api-key"
    return dev_key.read_text().strip() if dev_key.exists() else None


def output(args: argparse.Namespace) -> Output:
    return Output(bool(getattr(args, "json", False)))
