"""``GET /openapi.json``: the HTTP API, described (OpenAPI 3.0).

Kept beside the views and checked against them by a property test (schemathesis in
``tests/integration/test_openapi.py``): every documented operation is called with generated
parameters and its status codes, content types and bodies must match what is written here.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from statekeeper.app import app

JSON = "application/json"
_ERRORS = {
    "400": "bad parameters; `error.message` names the one at fault",
    "401": "no API key, or an unknown one",
    "403": "the key may not do this (read-only, or another tenant named)",
    "404": "no such entity for this tenant (another tenant's answers the same)",
    "413": "the body or one event is too large",
    "503": "recovering or rebalancing: retry after `Retry-After` seconds",
}


def _error_response(code: str) -> dict[str, Any]:
    return {"description": _ERRORS[code], "content": {JSON: {"schema": _ref("Error")}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(*required: str, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _param(name: str, where: str = "query", required: bool = False, **schema: Any) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema or {"type": "string"},
    }


def _path_key(name: str) -> dict[str, Any]:
    return _param(name, "path", type="string", minLength=1, maxLength=256, pattern=r"^[^/]+$")


def _get(
    summary: str,
    body: dict[str, Any],
    params: list[dict] | None = None,
    errors: tuple[str, ...] = ("400", "401", "404", "503"),
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK", "content": {JSON: {"schema": body}}}
    if headers:
        ok["headers"] = headers
    return {
        "get": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "parameters": params or [],
            "responses": {"200": ok, **{code: _error_response(code) for code in errors}},
        }
    }


_FRESHNESS = {
    "X-Statekeeper-Offset": {
        "description": "last input offset this answer's partition reflects",
        "schema": {"type": "string"},
    },
    "X-Statekeeper-Lag": {
        "description": "records in that partition not yet applied",
        "schema": {"type": "string"},
    },
}
_ITEM = _obj(
    "key", "workflow", "state", "condition", "version", "attempt", "attrs",
    key={"type": "string"}, workflow={"type": "string"}, state={"type": "string"},
    condition={"type": "string", "enum": ["active", "completed", "failed", "cancelled"]},
    version={"type": "integer"}, attempt={"type": "integer"}, attrs={"type": "object"},
    created_at={"type": "integer"}, entered_at={"type": "integer"},
    updated_at={"type": "integer"}, error={"type": "object"},
)  # fmt: skip
_LIST_OF = lambda name, item: _obj(name, **{name: {"type": "array", "items": item}})  # noqa: E731


def _paths() -> dict[str, Any]:
    key = _path_key
    return {
        "/v1/workflows/counts": _get(
            "Work in progress: items by state and condition per workflow",
            {"type": "object", "additionalProperties": _obj("states", "conditions")},
            [_param("workflow")],
            errors=("401", "503"),
        ),
        "/v1/workflows/stuck": _get(
            "Items longer in their state than its SLA, most overdue first",
            _LIST_OF("items", _ITEM),
            [_param("workflow")],
            errors=("401", "503"),
        ),
        "/v1/workflows": _get(
            "Items by workflow, state, condition and attributes, a page at a time",
            _obj("items", "next_cursor", items={"type": "array", "items": _ITEM},
                 next_cursor={"type": "string", "nullable": True}),
            [_param("workflow"), _param("state"), _param("condition"),
             _param("limit", type="integer", minimum=1, maximum=500), _param("cursor")],
            errors=("400", "401", "503"),
        ),  # fmt: skip
        "/v1/workflows/{item}": _get(
            "Where is this item now?", _ITEM, [key("item")], headers=_FRESHNESS
        ),
        "/v1/workflows/{item}/history": _get(
            "Every applied change of one item, oldest first",
            _obj("key", "history", key={"type": "string"},
                 history={"type": "array", "items": {"type": "object"}}),
            [key("item")],
            headers=_FRESHNESS,
        ),  # fmt: skip
        "/v1/sessions/{session}": _get(
            "A live session: user, step, steps done, data, deadlines",
            {"type": "object"},
            [key("session")],
            headers=_FRESHNESS,
        ),
        "/v1/conversations/{user}/messages": _get(
            "A conversation's messages, newest last",
            _obj("messages", messages={"type": "array", "items": {"type": "object"}}),
            [key("user"), _param("conversation"),
             _param("limit", type="integer", minimum=1, maximum=500),
             _param("before", type="integer", minimum=0)],
        ),  # fmt: skip
        "/v1/conversations/{user}/context": _get(
            "Recent turns, relevant older turns and a summary, within a token budget",
            {"type": "object"},
            [key("user"), _param("budget_tokens", required=True, type="integer", minimum=1,
                                 maximum=100_000), _param("conversation"), _param("query")],
        ),  # fmt: skip
        "/v1/conversations/{user}/search": _get(
            "Ranked (BM25) matches across the user's conversations",
            _obj("results", results={"type": "array", "items": {"type": "object"}}),
            [key("user"), _param("q", required=True, minLength=1),
             _param("limit", type="integer", minimum=1, maximum=100)],
        ),  # fmt: skip
        "/v1/resources/{resource}": _get(
            "A live resource and its deadlines", {"type": "object"}, [key("resource")],
            headers=_FRESHNESS,
        ),  # fmt: skip
        "/v1/lifecycle/stats": _get(
            "Live counts and bytes by kind, expirations and purges, next deadlines",
            _obj("resources", "total", "purged", "next_deadlines"),
            errors=("401", "503"),
        ),
        "/v1/reports": _get(
            "The reports available and their parameters",
            _LIST_OF("reports", {"type": "object"}),
            errors=("401",),
        ),
        "/v1/reports/{name}": _get(
            "An expensive computation behind the Redis cache (`X-Cache`: hit/miss/stale/bypass)",
            _obj("report", "cache", "result"),
            [_param("name", "path", type="string", enum=["workflow"]),
             _param("workflow", required=True, minLength=1)],
            headers={"X-Cache": {"schema": {"type": "string"}},
                     "Age": {"schema": {"type": "string"}}},
        ),  # fmt: skip
        "/v1/events": {
            "post": {
                "summary": "Produce one envelope or a list of them (all or nothing)",
                "security": [{"apiKey": []}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"oneOf": [
                        _ref("Envelope"),
                        {"type": "array", "items": _ref("Envelope"), "minItems": 1,
                         "maxItems": 1000},
                    ]}}},
                },  # fmt: skip
                "responses": {
                    "202": {
                        "description": "acknowledged by Kafka",
                        "content": {JSON: {"schema": _obj(
                            "accepted", "ids", accepted={"type": "integer"},
                            ids={"type": "array", "items": {"type": "string"}})}},
                    },  # fmt: skip
                    **{c: _error_response(c) for c in ("400", "401", "403", "413", "503")},
                },
            }
        },
        "/v1/dashboard/cache": _get(
            "Cache outcomes over the workers (worker-wide counters) and the hit rate",
            _obj("hits", "misses", "stale", "bypasses", "requests", "hit_rate", "available",
                 hit_rate={"type": "number", "nullable": True}),
            errors=("401", "503"),
        ),  # fmt: skip
        "/v1/dashboard/stream": {"get": {
            "summary": "Server-Sent Events: the tenant's status changes, and snapshot ticks",
            "security": [{"apiKey": []}],
            "responses": {
                "200": {"description": "an endless event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **{code: _error_response(code) for code in ("401", "503")},
            },
        }},  # fmt: skip
        "/dashboard": {"get": {"summary": "The web dashboard (the page holds no data)",
                               "responses": {"200": {"description": "HTML", "content": {
                                   "text/html": {"schema": {"type": "string"}}}}}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {
            "description": "alive", "content": {JSON: {"schema": _obj("status")}}}}}},
        "/readyz": {"get": {"summary": "Readiness: tables recovered", "responses": {
            "200": {"description": "ready", "content": {JSON: {"schema": _obj("status")}}},
            "503": _error_response("503")}}},
        "/metrics": {"get": {"summary": "Prometheus text format", "responses": {"200": {
            "description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }  # fmt: skip


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "statekeeper",
            "version": "1",
            "description": "State and memory for systems that work over time.",
        },
        "servers": [{"url": str(app.conf.canonical_url)}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _obj(
                    "error",
                    error=_obj(
                        "code", "message", code={"type": "string"}, message={"type": "string"}
                    ),
                ),  # fmt: skip
                "Envelope": _obj(
                    "type",
                    "key",
                    v={"type": "integer", "enum": [1]},
                    id={"type": "string", "minLength": 1, "maxLength": 128},
                    type={"type": "string"},
                    tenant={"type": "string"},
                    key={"type": "string", "minLength": 1},
                    ts={"type": "integer", "minimum": 0},
                    data={"type": "object"},
                ),  # fmt: skip
            },
        },
    }


@app.page("/openapi.json")
async def openapi(view: View, request: Request) -> Response:
    """This API, described."""
    return view.json(document())
