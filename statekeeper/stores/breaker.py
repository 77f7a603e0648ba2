"""A circuit breaker for a dependency we can do without (Redis for the cache)."""

from __future__ import annotations

import logging
import time

from statekeeper.metrics import CacheMetrics

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed while Redis answers; open for ``retry_s`` after an error, then one probe.

    While open, callers skip Redis entirely, so a dead Redis costs one timeout per
    ``retry_s`` rather than one per request.
    """

    def __init__(self, retry_s: float, stats: CacheMetrics) -> None:
        self.retry_s = retry_s
        self.stats = stats
        self.open_until: float | None = None
        self.probing = False

    def trip(self, error: BaseException) -> None:
        """Open (or keep open) after ``error``."""
        if self.open_until is None:
            logger.warning("redis unavailable (%r); caching bypassed", error)
        self.open_until = time.monotonic() + self.retry_s
        self.stats.available = False
        self.stats.redis_errors += 1

    def close(self) -> None:
        """Redis answered the probe."""
        if self.open_until is not None:
            logger.info("redis answers again; caching resumed")
        self.open_until = None
        self.stats.available = True

    def state(self) -> str:
        """``closed`` (use Redis), ``open`` (bypass) or ``probe`` (this caller tries Redis)."""
        if self.open_until is None:
            return "closed"
        if self.probing or time.monotonic() < self.open_until:
            return "open"
        return "probe"
