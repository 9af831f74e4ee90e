"""The explorer in a real browser: Debian chromium driven by Playwright against uvicorn on 127.0.0.1.

The server is the standalone auditor app (:func:`proxima.audit.api.create_app`, explorer at ``/``) over the
indexed py-evm world (``audited``), with signed offers for three providers. One browser for the module.
Navigation runs with JavaScript disabled: the pages must work without it. Screenshots go to
``$PROXIMA_SCREENSHOTS`` (default: the temporary directory) as ``proxima-explorer-*.png``.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from test_explorer_pages import COUNTRIES, explorer_service

from proxima.audit.api import create_app
from proxima.audit.explorer import formats

CHROMIUM = os.environ.get("PROXIMA_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("PROXIMA_SCREENSHOTS", tempfile.gettempdir()))


class _Server:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(audited: Any) -> Iterator[str]:
    app = create_app(explorer_service(audited), start_follow=False)
    with _Server(app) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def test_everyPage_loadsWithoutConsoleErrors(browser: Browser, server: str, audited: Any) -> None:
    facts = audited.facts
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # JavaScript on: errors show
    errors: list[str] = []
    try:
        tab = context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(f"{tab.url}: {message.text}")

        tab.on("console", on_console)
        tab.on("pageerror", lambda err: errors.append(f"{tab.url}: {err}"))
        tab.on("requestfailed", lambda request: errors.append(f"failed {request.url}"))
        paths = {
            "/": "Overview",
            "/providers": "Providers",
            f"/providers/{facts.providers[0]}": "Provider",
            "/jobs": "Escrow jobs",
            f"/jobs/0x{facts.jobs['confirmed'].hex()}": "Job",
            "/slashes": "Slashes",
            "/rewards": "Reward epochs",
            "/verify": "Verification",
            f"/tx/0x{facts.tx['open:confirmed'].hex()}": "Transaction",
        }
        for path, heading in paths.items():
            response = tab.goto(server + path)
            assert response is not None
            assert response.status == 200, path
            assert tab.locator("h1").inner_text().startswith(heading), path
            # the stylesheet applied: the header bar is dark
            assert tab.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == (
                "rgb(15, 23, 42)"
            )
    finally:
        context.close()
    assert errors == []


def test_overview_showsTheChainsTotalsAndCharts(page: Page, server: str, audited: Any) -> None:
    facts = audited.facts
    page.goto(server + "/")
    total = sum(
        int(audited.contracts.registry.account_of(a).stake) for a in facts.providers + facts.verifiers
    )
    stake = page.locator("#total-stake .wei")
    assert stake.inner_text() == f"{formats.eth_short(total)} ETH"
    assert stake.get_attribute("title") == f"{formats.eth_exact(total)} ETH = {total:,} wei"
    charts = page.locator("svg.chart")
    assert charts.count() == 4
    for index in range(4):
        box = charts.nth(index).bounding_box()
        assert box is not None
        assert box["width"] > 300
        assert box["height"] > 100
    assert page.locator("svg.chart rect.bar").count() > 0
    page.screenshot(path=str(SHOTS / "proxima-explorer-overview.png"), full_page=True)


def test_map_showsTheProvidersAndLinksToThem(page: Page, server: str, audited: Any) -> None:
    facts = audited.facts
    page.goto(server + "/providers")
    spots = page.locator("svg.map a.spot")
    assert spots.count() == len(COUNTRIES)
    countries = sorted(spots.nth(i).get_attribute("data-country") or "" for i in range(spots.count()))
    assert countries == sorted(c for c, _ in COUNTRIES.values())
    for index in range(spots.count()):
        box = spots.nth(index).locator("circle").bounding_box()
        assert box is not None
        assert box["width"] >= 6  # visible
    unplaced = page.locator("figure.mapbox figcaption a")
    assert [unplaced.nth(i).get_attribute("title") for i in range(unplaced.count())] == [facts.providers[3]]
    page.screenshot(path=str(SHOTS / "proxima-explorer-providers.png"), full_page=True)
    page.locator('svg.map a.spot[data-country="NG"] circle').click()
    page.wait_for_url(re.compile(rf"/providers/{facts.providers[2]}$"))
    assert "NG" in page.locator("dl.facts").first.inner_text()


def test_sortLinks_reorderTheTable(page: Page, server: str, audited: Any) -> None:
    facts = audited.facts
    page.goto(server + "/providers?role=provider")
    page.get_by_role("link", name=re.compile(r"^Stake")).click()  # sorted by stake desc: flips to asc
    page.wait_for_url(re.compile(r"order=asc"))
    cells = page.locator("#providers tbody tr td:first-child a")
    shown = [cells.nth(i).get_attribute("title") for i in range(cells.count())]
    stakes = {a: int(audited.contracts.registry.account_of(a).stake) for a in facts.providers}
    assert shown == sorted(facts.providers, key=lambda a: (stakes[a], a.lower()))


def test_followLinks_providerToItsSlashToTheJob(page: Page, server: str, audited: Any) -> None:
    facts = audited.facts
    provider = next(account for kind, account in facts.slashes if kind == "timeout")
    job_id = "0x" + facts.jobs["timed_out"].hex()
    page.goto(server + "/providers")
    page.locator(f'#providers a[title="{provider}"]').first.click()
    page.wait_for_url(re.compile(rf"/providers/{provider}$"))
    evidence = page.locator("div.evidence", has=page.locator("span.badge", has_text="timeout"))
    assert evidence.count() == 1
    page.screenshot(path=str(SHOTS / "proxima-explorer-provider.png"), full_page=True)
    evidence.locator(f'a[title="{job_id}"]').click()
    page.wait_for_url(re.compile(rf"/jobs/{job_id}$"))
    assert page.locator("h1").inner_text() == f"Job {job_id}"
    facts_box = page.locator("#job-facts").inner_text()
    assert "refunded" in facts_box
    assert provider in facts_box
    # and from the job back to the transaction that opened it
    page.locator("#job-facts a", has_text=re.compile("^0x")).last.click()
    page.wait_for_url(re.compile(r"/tx/0x[0-9a-f]{64}$"))
    assert "JobEscrow.JobOpened" in page.locator("main").inner_text()


def test_slashesPage_showsEvidence(page: Page, server: str, audited: Any) -> None:
    facts = audited.facts
    page.goto(server + "/slashes")
    assert page.locator("div.evidence").count() == len(facts.slashes)
    canary = page.locator("div.evidence", has=page.locator("span.badge", has_text="canary"))
    text = canary.inner_text()
    assert "Verdict signers" in text
    assert sum(1 for v in facts.verifiers if v in text) >= 2
    page.screenshot(path=str(SHOTS / "proxima-explorer-slashes.png"), full_page=True)


def test_unknownJob_showsA404Page(page: Page, server: str) -> None:
    response = page.goto(server + "/jobs/0x" + "ab" * 32)
    assert response is not None
    assert response.status == 404
    assert "no escrow job" in page.locator("div.error").inner_text()
    response = page.goto(server + "/jobs?limit=100000")
    assert response is not None
    assert response.status == 400
