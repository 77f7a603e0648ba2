"""HTTP views of reports (``/v1/reports``): expensive computations behind the Redis cache.

Any worker answers a report: it asks the cache, and on a miss computes the report over
every partition (each owner scans its own share of the history, :mod:`statekeeper.web.cluster`).
The answer carries ``X-Cache`` (hit, miss, stale, bypass) and ``Age`` (whole seconds since
the value was computed; ``age_s`` in the body is exact).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faust.web import Request, Response, View

from statekeeper import codec
from statekeeper.agents.definitions import registry
from statekeeper.app import app
from statekeeper.stores.cache import cache
from statekeeper.stores.reports import (
    Param,
    Report,
    ReportContext,
    ReportError,
    UnknownSubject,
    WorkflowShare,
    merge_workflow_report,
    reports,
)
from statekeeper.stores.scan import scan_prefix
from statekeeper.stores.tables import workflow_history
from statekeeper.web.api import ApiError, api_view, tenant_of
from statekeeper.web.cluster import gather, local_query

YIELD_EVERY = 2000  # history records scanned between yields to the event loop


@dataclass
class RequestContext:
    """A :class:`ReportContext` for one HTTP request (its API key reaches other workers)."""

    tenant: str
    request: Request

    async def gather(self, query: str, params: Mapping[str, str]) -> list[Any]:
        return await gather(self.request, query, list(range(app.settings.partitions)), params)


@local_query("report-workflow")
async def _local_workflow_share(
    tenant: str, partitions: list[int], params: Mapping[str, str]
) -> Any:
    """This worker's partitions of one workflow's history, summarised."""
    share = WorkflowShare(params["workflow"])
    prefix = f"{tenant}/".encode()
    for partition in partitions:
        for n, (_, raw) in enumerate(scan_prefix(workflow_history, partition, prefix), 1):
            share.add(codec.unpack(raw))
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long scan must not stall the agents
    return share.to_json()


async def workflow_report(ctx: ReportContext, params: Mapping[str, str]) -> Any:
    """Per state of one workflow: items, median and p95 time in state, throughput, failures."""
    name = params["workflow"]
    definition = registry.get(ctx.tenant, name)
    if definition is None:
        raise UnknownSubject(f"no workflow {name!r}")
    shares = await ctx.gather("report-workflow", {"workflow": name})
    return merge_workflow_report(name, definition.states, shares)


reports.register(
    Report(
        name="workflow",
        description="Per state: items there now, median and p95 time in state (from every "
        "item's full history), entries per hour over the observed window, failure rate.",
        params=(Param("workflow", "workflow name"),),
        compute=workflow_report,
        tags=lambda params: [f"workflow:{params['workflow']}"],
    )
)


@app.page("/v1/reports")
@api_view
async def list_reports(view: View, request: Request) -> Response:
    """The reports available and their parameters."""
    tenant_of(request)
    return view.json({"reports": [report.public() for report in reports.all()]})


@app.page("/v1/reports/{name}")
@api_view
async def get_report(view: View, request: Request, name: str) -> Response:
    """One report, from the cache when it can be."""
    tenant = tenant_of(request)
    report = reports.get(name)
    if report is None:
        raise ApiError(404, "not_found", f"no report {name!r}")
    try:
        params = report.parse(request.query)
        context = RequestContext(tenant, request)
        result = await cache.get_or_compute(
            f"report.{name}",
            tenant,
            params,
            lambda: report.compute(context, params),
            ttl_s=report.ttl_s or app.settings.cache_ttl_s,
            tags=report.tags(params),
        )
    except ReportError as error:
        raise ApiError(error.status, error.code, str(error)) from None
    body = {
        "report": name,
        "params": params,
        "cache": result.status,
        "age_s": round(result.age_s, 3),
        "result": result.value,
    }
    headers = {"X-Cache": result.status, "Age": str(math.floor(result.age_s))}
    return view.json(body, headers=headers)
