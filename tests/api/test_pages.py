"""The discovery pages in headless Chromium (Debian's), driven by Playwright, on a real server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from registry.embedded import EmbeddedRegistry
from tests.api.conftest import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


def test_search_follow_and_read_a_version(
    browser: Browser,
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    operator.publish(adapters["curious"], "curious-uncertainty@1.0.0")
    operator.publish(adapters["confident"], "curious-uncertainty@1.2.0", alias="prod")
    operator.publish(adapters["engaged"], "team-a/engaged-difficulty@0.1.0")
    operator.yank("curious-uncertainty@1.0.0", reason="regressed on the eval")
    server = serve()
    page = browser.new_page()
    page.goto(server.url + "/")
    assert page.locator("#results tr").count() == 3  # header + 2 adapters
    page.fill("input[name=q]", "curious")
    page.click("button[type=submit]")
    page.wait_for_url("**/?q=curious*")
    rows = page.locator("#results tr")
    assert rows.count() == 2 and "default/curious-uncertainty" in rows.nth(1).inner_text()

    page.click("text=default/curious-uncertainty")
    page.wait_for_url("**/adapters/default/curious-uncertainty")
    versions = page.locator("#versions").inner_text()
    assert "yanked: regressed on the eval" in versions and "prod" in versions
    history = page.locator("#alias-history tr")
    assert history.count() == 2 and "prod" in history.nth(1).inner_text()
    assert "1.2.0" in history.nth(1).inner_text()

    page.click("#versions >> text=1.2.0")
    page.wait_for_url("**/adapters/default/curious-uncertainty/1.2.0")
    assert page.locator("#pin").inner_text() == 'curious-uncertainty = "1.2.0"'
    assert page.locator("#pull").inner_text() == "stance pull default/curious-uncertainty@1.2.0"
    heat = page.locator("svg.heatmap rect")
    assert heat.count() == 8  # 4 layers x (q_proj, v_proj)
    assert {heat.nth(i).get_attribute("data-module") for i in range(8)} == {"q_proj", "v_proj"}
    assert page.locator("svg.spectrum polyline").count() == 2
    assert page.locator("#files tr").count() == 4
    shot = tmp_path / "version-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()
