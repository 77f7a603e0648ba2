"""Loads every agent, table and view onto the app: the worker's entry point."""

from __future__ import annotations

from statekeeper.app import StatekeeperApp, app


def load() -> StatekeeperApp:
    """Import the modules that register agents, tables and views; return the app."""
    from statekeeper.agents import definitions, session, workflow  # noqa: F401
    from statekeeper.web import cluster, health, sessions, workflows  # noqa: F401
    from statekeeper.agents import cache_invalidation  # noqa: F401
    from statekeeper.web import reports  # noqa: F401

    from statekeeper.agents import conversation  # noqa: F401
    from statekeeper.web import conversations  # noqa: F401

    from statekeeper.agents import lifecycle  # noqa: F401
    from statekeeper.web import lifecycle as lifecycle_views  # noqa: F401

    from statekeeper.web import events, openapi  # noqa: F401

    from statekeeper.web import dashboard  # noqa: F401

    return app
