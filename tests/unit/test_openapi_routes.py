"""Every API route the worker serves is described in /openapi.json, and nothing else is."""

from __future__ import annotations

from statekeeper.web.openapi import document
from statekeeper.worker import load

INTERNAL = {"/v1/_local/{name}"}  # worker-to-worker share of a cluster-wide query


def test_every_served_route_is_documented_and_every_documented_one_is_served() -> None:
    app = load()
    served = {path for path in app.web.views if path.startswith("/v1/")} - INTERNAL
    documented = {path for path in document()["paths"] if path.startswith("/v1/")}
    assert served == documented


def test_operations_declare_their_errors_in_the_contract_shape() -> None:
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, code)
