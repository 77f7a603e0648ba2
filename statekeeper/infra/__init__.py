"""Local infrastructure: a single-node Kafka broker and a Redis server on loopback."""

from statekeeper.infra import kafka, redis

__all__ = ["kafka", "redis"]
