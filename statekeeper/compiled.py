"""The compiled core (``statekeeper-native``, built from ``native/`` by ``make deps``)."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from statekeeper.settings import get_settings


@functools.cache
def compiled_module() -> Any | None:
    """The ``statekeeper_native`` module when it is installed and ``STATEKEEPER_NATIVE`` is on,
    else None (then every piece it would serve runs in Python)."""
    if not get_settings().native:
        return None
    try:
        return importlib.import_module("statekeeper_native")
    except ImportError:
        return None
