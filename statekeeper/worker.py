"""Loads every agent, table and view onto the app: the worker's entry point."""

from __future__ import annotations

from statekeeper.app import StatekeeperApp, app


def load() -> StatekeeperApp:
    """Import the modules that register agents, tables and views; return the app."""
    from statekeeper.agents import (  # noqa: F401
        cache_invalidation,
        conversation,
        definitions,
        lifecycle,
        session,
        workflow,
    )
    from statekeeper.web import (  # noqa: F401
        cluster,
        conversations,
        dashboard,
        events,
        health,
        openapi,
        reports,
        sessions,
        workflows,
    )
    from statekeeper.web import lifecycle as lifecycle_views  # noqa: F401

    return app
