"""The root of every exception statekeeper raises on purpose."""

from __future__ import annotations


class StatekeeperError(Exception):
    """Root exception. ``retriable`` says whether trying the same thing again may succeed."""

    retriable = False


class ConfigError(StatekeeperError):
    """The settings are wrong; the message says which one and how to fix it."""


class InfraError(StatekeeperError):
    """Local infrastructure (Kafka, Redis) could not be set up; the message names the part."""


class NotReadyError(StatekeeperError):
    """The worker is still recovering its tables."""

    retriable = True
