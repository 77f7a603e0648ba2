"""What the client raises: one root, the API's errors by status, delivery failures.

Every exception here derives from :class:`ClientError` (itself a
:class:`statekeeper.exceptions.StatekeeperError`); ``retriable`` on the class says whether
the same call may succeed later (503 while a worker recovers, a broker that did not answer).
"""

from __future__ import annotations

from typing import Any

from statekeeper.exceptions import StatekeeperError


class ClientError(StatekeeperError):
    """Root of everything the statekeeper client raises."""


class DeliveryError(ClientError):
    """The broker did not acknowledge an event; send it again with the same id."""

    retriable = True


class ApiError(ClientError):
    """The HTTP API answered ``{"error": {"code", "message"}}`` with ``status``."""

    status = 0

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: a parameter or body the API refuses; ``code`` says which rule."""


class Unauthorized(ApiError):
    """401: no API key, or one the workers do not know."""


class Forbidden(ApiError):
    """403: the key may not do this (a read-only key posting, another tenant's events)."""


class NotFound(ApiError):
    """404: missing, ended, or another tenant's (the API does not tell them apart)."""


class PayloadTooLarge(ApiError):
    """413: the body or one event is over the workers' limit."""


class Unavailable(ApiError):
    """503: tables are recovering or partitions are moving; retry after ``retry_after``."""

    retriable = True


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    503: Unavailable,
}


def error_for(status: int, body: Any, retry_after: str | None) -> ApiError:
    """The typed exception for an error answer (any other status: plain :class:`ApiError`)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "error")), str(error.get("message", ""))
    else:
        code, message = "http_error", str(body)[:300]
    try:
        delay = float(retry_after) if retry_after is not None else None
    except ValueError:
        delay = None
    return _BY_STATUS.get(status, ApiError)(status, code, message, delay)
