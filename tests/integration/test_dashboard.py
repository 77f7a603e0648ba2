"""The dashboard: its live stream over plain HTTP, and the page in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.conftest import ACME_KEY, GLOBEX_KEY, Deployment
from tests.integration.test_workflow_slice import INVOICE
from tests.support.kafka import envelope, send_envelopes
from tests.support.worker import WorkerProcess, http_get, wait_for

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT_ENV = "STATEKEEPER_DASHBOARD_SCREENSHOT"  # also save the screenshot there (docs)
TICKET = {
    "states": ["open", "closed"],
    "initial": "open",
    "terminal": ["closed"],
    "transitions": [["open", "closed"]],
}
ONBOARDING = {
    "states": ["signup", "verify", "kyc", "done"],
    "initial": "signup",
    "terminal": ["done"],
    "transitions": [["signup", "verify"], ["verify", "kyc"], ["kyc", "done"]],
}


# --- the stream over HTTP --------------------------------------------------------------


class EventStream:
    """Reads Server-Sent Events from an open response, as the page does."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self.reply = reply
        self.buffer = b""
        self.seen: list[tuple[str, Any]] = []

    async def next(self) -> tuple[str, Any] | None:
        while b"\n\n" not in self.buffer:
            chunk = await self.reply.content.readany()
            if not chunk:
                return None
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        fields = dict(line.split(": ", 1) for line in raw.decode().splitlines())
        event = (fields["event"], json.loads(fields["data"]))
        self.seen.append(event)
        return event

    async def until(self, wanted: Any, timeout: float = 30.0) -> tuple[str, Any]:
        async def scan() -> tuple[str, Any]:
            while True:
                event = await self.next()
                assert event is not None, "the stream ended"
                if wanted(*event):
                    return event

        return await asyncio.wait_for(scan(), timeout)

    def statuses(self) -> list[dict[str, Any]]:
        return [data for name, data in self.seen if name == "status"]


async def open_stream(http: aiohttp.ClientSession, url: str, key: str) -> EventStream:
    reply = await http.get(f"{url}/v1/dashboard/stream", headers={"Authorization": f"Bearer {key}"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    return EventStream(reply)


async def test_stream_refuses_bad_keys_and_carries_only_the_callers_tenant(
    deployment: Deployment,
) -> None:
    worker = deployment.start()
    url = f"{worker.url}/v1/dashboard/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X": "y"}):
            async with http.get(url, headers=headers) as reply:
                assert reply.status == 401
                assert (await reply.json())["error"]["code"] == "unauthorized"
        acme = await open_stream(http, worker.url, ACME_KEY)
        globex = await open_stream(http, worker.url, GLOBEX_KEY)
        assert (await acme.next()) is not None and acme.seen[0][1]["tenant"] == "acme"
        assert (await globex.next()) is not None and globex.seen[0][1]["tenant"] == "globex"

        await define(deployment, "acme", "invoice", INVOICE)
        await define(deployment, "globex", "invoice", INVOICE)
        await start_items(deployment, "globex", "invoice", ["g-1"])
        await start_items(deployment, "acme", "invoice", ["a-1"])
        await acme.until(lambda name, data: name == "status" and data["key"] == "a-1")
        await globex.until(lambda name, data: name == "status" and data["key"] == "g-1")
        # g-1 has been dispatched (globex saw it); a-2 is produced only now, so had g-1
        # been queued for acme it would arrive before a-2.
        await start_items(deployment, "acme", "invoice", ["a-2"])
        await acme.until(lambda name, data: name == "status" and data["key"] == "a-2")
        assert {(r["tenant"], r["key"]) for r in acme.statuses()} == {
            ("acme", "a-1"),
            ("acme", "a-2"),
        }
        assert {(r["tenant"], r["key"]) for r in globex.statuses()} == {("globex", "g-1")}
        first = next(r for r in acme.statuses() if r["key"] == "a-1")
        assert (first["from"], first["to"], first["condition"]) == (None, "draft", "active")

        # A dashboard connecting later starts with the tenant's recent changes.
        late = await open_stream(http, worker.url, GLOBEX_KEY)
        await late.until(lambda name, data: name == "status" and data["key"] == "g-1")
        # Quiet streams still tick, so the page re-reads its snapshot.
        await globex.until(lambda name, data: name == "tick", timeout=60)

        # Stopping the worker ends open streams (they do not hold the shutdown up).
        worker.stop()
        assert worker.process is not None and worker.process.returncode != -9
        assert await asyncio.wait_for(_rest(acme), 30) is None


async def _rest(stream: EventStream) -> tuple[str, Any] | None:
    while (event := await stream.next()) is not None:
        pass
    return event


# --- the page in a browser -------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's headless Chromium, driven by its own chromedriver (nothing downloaded)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: run scripts/system-deps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1360,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def text_of(driver: WebDriver, selector: str) -> str | None:
    """The element's text, read in one step (the page re-renders panels as data arrives)."""
    script = "const e = document.querySelector(arguments[0]); return e && e.textContent.trim()"
    found = driver.execute_script(script, selector)
    return str(found) if found is not None else None


def shows(driver: WebDriver, selector: str, text: str | None = None, timeout: float = 30) -> None:
    """Wait until ``selector`` exists (and reads ``text``), without reloading the page."""

    def check(_: Any) -> bool:
        found = text_of(driver, selector)
        return found is not None and (text is None or found == text)

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        check, f"{selector} never showed {text!r}: it shows {text_of(driver, selector)!r}"
    )


def counts_shown(driver: WebDriver, workflow: str, **expected: str) -> None:
    card = f'.workflow[data-workflow="{workflow}"]'
    for name, value in expected.items():
        row = f'{card} .state-row[data-state="{name}"] .count'
        condition = f'{card} .legend [data-condition="{name}"] .n'
        selector = row if name in INVOICE["states"] else condition
        shows(driver, selector, value)


def sign_in(driver: WebDriver, key: str) -> None:
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    shows(driver, '#live[data-state="live"]')


async def test_dashboard_shows_live_work_and_how_to_resume(
    deployment: Deployment, browser: WebDriver, tmp_path: Path
) -> None:
    worker = deployment.start(STATEKEEPER_DASHBOARD_TICK_S="2")
    await seed(deployment, worker)
    page = http_get(f"{worker.url}/dashboard")
    assert page[0] == 200 and "inv-" not in page[2] and "invoice" not in page[2]

    browser.get(f"{worker.url}/dashboard")
    sign_in(browser, ACME_KEY)
    counts_shown(browser, "invoice", draft="4", sent="1", paid="1", active="5", completed="1")
    browser.execute_script("window.notReloaded = true")

    await send(deployment, "acme", [
        ("workflow.transition", "inv-3", {"to": "sent"}),
        ("workflow.transition", "inv-1", {"to": "paid", "actor": "billing"}),
        ("workflow.fail", "inv-4", {"error": "printer on fire"}),
    ])  # fmt: skip
    counts_shown(browser, "invoice", draft="3", sent="1", paid="2", active="3", failed="1")
    shows(browser, '#transitions tr[data-key="inv-1"][data-to="paid"]')
    shows(browser, '#failed .failed-item[data-key="inv-4"] .error-text', "printer on fire")
    shows(browser, '#stuck tr[data-key="inv-3"]')
    shows(browser, "#kpi-failed", "1")
    shows(browser, "#kpi-resources", "2")
    cache = http_get(f"{worker.url}/v1/dashboard/cache", ACME_KEY)[2]
    assert cache["hits"] >= 1 and cache["requests"] > cache["hits"]  # a miss, then hits
    shows(browser, "#kpi-cache", f"{100 * cache['hit_rate']:.1f}%")
    assert browser.execute_script("return window.notReloaded") is True

    save_screenshot(browser, tmp_path)
    body = json.loads(text_of(browser, '#failed [data-key="inv-4"] pre.resume-body') or "")
    assert body == {
        "type": "workflow.resume",
        "key": "inv-4",
        "data": {"reason": "resumed from the dashboard", "expected_version": 2},
    }
    assert post_events(worker, body) == 202  # the instructions work as shown
    shows(browser, "#kpi-failed", "0")
    shows(browser, '#transitions tr[data-key="inv-4"][data-condition="active"]')

    # Another tenant's key shows none of it.
    browser.find_element(By.ID, "signout").click()
    sign_in(browser, GLOBEX_KEY)
    shows(browser, '.workflow[data-workflow="ticket"] .state-row[data-state="open"] .count', "1")
    await send(deployment, "globex", [("workflow.transition", "t-1", {"to": "closed"})])
    shows(browser, '#transitions tr[data-key="t-1"][data-to="closed"]')
    assert browser.find_elements(By.CSS_SELECTOR, '[data-workflow="invoice"]') == []
    assert browser.find_elements(By.CSS_SELECTOR, '#transitions tr[data-key^="inv-"]') == []
    assert text_of(browser, "#failed") == "No failed items."
    assert text_of(browser, "#kpi-resources") == "0"


async def seed(dep: Deployment, worker: WorkerProcess) -> None:
    """acme: two workflows with items in several states, resources, cached reports;
    globex: one ticket."""
    await define(dep, "acme", "invoice", {**INVOICE, "sla_seconds": {"sent": 1}})
    await define(dep, "acme", "onboarding", ONBOARDING)
    await define(dep, "globex", "ticket", TICKET)
    await start_items(dep, "acme", "invoice", [f"inv-{n}" for n in range(1, 7)])
    await start_items(dep, "acme", "onboarding", ["user-1", "user-2", "user-3"])
    await start_items(dep, "globex", "ticket", ["t-1"])
    await send(dep, "acme", [
        ("workflow.transition", "inv-1", {"to": "sent"}),
        ("workflow.transition", "inv-2", {"to": "sent"}),
        ("workflow.transition", "inv-2", {"to": "paid"}),
        ("workflow.transition", "user-1", {"to": "verify"}),
        ("workflow.transition", "user-2", {"to": "verify"}),
        ("workflow.transition", "user-2", {"to": "kyc"}),
        ("resource.register", "upload-1", {"kind": "upload", "ttl_s": 3600, "size_bytes": 3 << 20}),
        ("resource.register", "token-1", {"kind": "token", "idle_s": 900}),
    ])  # fmt: skip

    def settled() -> bool:
        status, _, counts = http_get(f"{worker.url}/v1/workflows/counts", ACME_KEY)
        return status == 200 and counts["invoice"]["states"]["paid"] == 1

    wait_for(settled, timeout=60)
    report = f"{worker.url}/v1/reports/workflow?workflow=invoice"
    wait_for(lambda: http_get(report, ACME_KEY)[1].get("X-Cache") == "hit", timeout=30)


async def define(dep: Deployment, tenant: str, name: str, definition: dict[str, Any]) -> None:
    event = envelope("workflow.define", name, definition, tenant=tenant)
    await send_envelopes(dep.bootstrap, dep.topic("workflow.definitions"), [event])


async def start_items(dep: Deployment, tenant: str, workflow: str, keys: list[str]) -> None:
    await send(dep, tenant, [("workflow.start", key, {"workflow": workflow}) for key in keys])


async def send(dep: Deployment, tenant: str, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Produce events in order, each to its pattern's topic."""
    for event_type, key, data in events:
        topic = "lifecycle.events" if event_type.startswith("resource.") else "workflow.events"
        event = envelope(event_type, key, data, tenant=tenant)
        await send_envelopes(dep.bootstrap, dep.topic(topic), [event])


def post_events(worker: WorkerProcess, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{worker.url}/v1/events",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ACME_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        return int(reply.status)


def save_screenshot(driver: WebDriver, tmp_path: Path) -> None:
    """The whole page; also to $STATEKEEPER_DASHBOARD_SCREENSHOT (how docs/ gets it)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": 1360, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore[attr-defined]
    targets = [tmp_path / "dashboard.png"]
    if os.environ.get(SCREENSHOT_ENV):
        targets.append(Path(os.environ[SCREENSHOT_ENV]))
    for target in targets:
        assert driver.save_screenshot(str(target))
