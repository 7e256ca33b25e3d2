"""The discovery pages in headless Chromium (Debian's), driven by Playwright, on a real server.

Screenshots of each page land in the test's tmp dir (for a person to look at when one fails).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Route, sync_playwright

from registry.api.svg import viridis
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
sqlite_only = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
HOSTILE_CARD = """---
license: apache-2.0
---
# A hostile card

Some **bold** text and a table:

| layer | note |
|---|---|
| 3 | strongest |

<script>window.__pwned = "script"</script>
<img src="x" onerror="window.__pwned = 'onerror'">
<a href="javascript:window.__pwned='link'" id="js-link">click me</a>
[markdown link](javascript:window.__pwned='md')
<div onmouseover="window.__pwned='hover'" style="position:fixed;inset:0">cover</div>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


def shot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000


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
    assert page.locator("#count").inner_text() == "2 adapters"
    assert page.locator("label[for=f-rank]").inner_text().startswith("rank")
    page.fill("input[name=q]", "curious")
    page.click("button[type=submit]")
    page.wait_for_url("**/?q=curious*")
    rows = page.locator("#results tr")
    assert rows.count() == 2 and "default/curious-uncertainty" in rows.nth(1).inner_text()
    assert page.locator("#count").inner_text() == "1 adapter matching"

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
    assert page.locator("#pull").inner_text() == (
        f"stance --registry {server.url} pull default/curious-uncertainty@1.2.0 "
        "-o ./curious-uncertainty"
    )
    roleset = page.locator("#use-roleset").inner_text()
    assert f'Registry("{server.url}")' in roleset and "curious-uncertainty@1.2.0" in roleset
    assert "PeftModel.from_pretrained" in page.locator("#use-peft").inner_text()
    assert "--lora-modules curious-uncertainty=" in page.locator("#use-vllm").inner_text()
    assert page.locator("#older").get_attribute("href").endswith("/curious-uncertainty/1.0.0")
    heat = page.locator("svg.heatmap rect[data-module]")
    assert heat.count() == 8  # 4 layers x (q_proj, v_proj)
    assert {heat.nth(i).get_attribute("data-module") for i in range(8)} == {"q_proj", "v_proj"}
    assert page.locator("svg.spectrum polyline").count() == 2
    assert page.locator("#files tr").count() == 4
    shot(page, tmp_path, "version-page")
    page.close()


@sqlite_only
def test_heat_map_scale_energy_axes_and_the_diff_view(
    browser: Browser,
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0")
    operator.publish(adapters["confident"], "role@1.1.0")
    server = serve()
    page = browser.new_page()
    page.goto(server.url + "/adapters/default/role/1.1.0")

    cells = page.locator("svg.heatmap rect[data-module]")
    values = [float(cells.nth(i).get_attribute("data-value") or "") for i in range(cells.count())]
    fills = [cells.nth(i).get_attribute("fill") for i in range(cells.count())]
    peak = max(values)
    assert fills[values.index(peak)] == viridis(1.0)  # the largest cell is the scale's top
    assert fills == [viridis(v / peak) for v in values]  # 0..max on viridis, nothing else
    assert len(set(fills)) == len(set(values))  # distinct values, distinct colours
    hover = cells.nth(0).locator("title").text_content() or ""
    assert hover.startswith("layer ") and f"{values[0]:.4g}" in hover
    ticks = page.locator("svg.heatmap .legend text").all_text_contents()
    assert ticks[0] == "0" and ticks[-1] == f"{peak:.3g}"
    assert page.locator("svg.heatmap linearGradient stop").count() == 17

    assert page.locator("svg.spectrum .xtick").count() == 8  # r = 8: one tick per rank
    assert page.locator("svg.spectrum .ytick text").all_text_contents() == [
        "0%",
        "25%",
        "50%",
        "75%",
        "100%",
    ]
    keys = page.locator("svg.spectrum .key line")
    points = page.locator("svg.spectrum polyline").first.get_attribute("points") or ""
    right_of_curves = max(float(p.split(",")[0]) for p in points.split())
    assert all(float(keys.nth(i).get_attribute("x1") or 0) > right_of_curves for i in range(2))
    shot(page, tmp_path, "fingerprint")

    page.click("#diff-older")
    page.wait_for_url(lambda url: "/diff?x=" in url)
    api = httpx.get(
        server.url + "/v1/diff", params={"x": "default/role@1.0.0", "y": "default/role@1.1.0"}
    ).json()
    assert page.locator("#cosine").inner_text() == f"{api['cosine']:+.4f}"
    layers = page.locator("#modules tr td:first-child").all_inner_texts()
    assert [int(x) for x in layers] == sorted(int(x) for x in layers) and len(layers) == 8
    assert page.locator("svg.cosinemap rect[data-module]").count() == 8
    shot(page, tmp_path, "diff")
    page.close()


@sqlite_only
def test_model_card_renders_and_its_scripts_never_run(
    browser: Browser,
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "hostile"
    shutil.copytree(adapters["curious"], folder)
    (folder / "README.md").write_text(HOSTILE_CARD)
    operator.publish(folder, "carded@1.0.0")
    server = serve()
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server.url + "/adapters/default/carded/1.0.0")
    card = page.locator("#card")
    assert card.locator("h1").inner_text() == "A hostile card"
    assert card.locator("strong").inner_text() == "bold"
    assert card.locator("table td").first.inner_text() == "3"
    assert "license: apache-2.0" in (card.locator("details pre").text_content() or "")
    assert card.locator("script").count() == 0
    assert card.locator("[onerror], [onmouseover], [style]").count() == 0
    for link in card.locator("a").all():
        assert not (link.get_attribute("href") or "").lower().startswith("javascript:")
    page.mouse.move(200, 200)
    for link in card.locator("a").all():
        link.click()
    assert page.evaluate("window.__pwned") is None and dialogs == []
    shot(page, tmp_path, "model-card")
    page.close()


@sqlite_only
def test_errors_are_html_pages(
    browser: Browser, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve()
    page = browser.new_page()
    response = page.goto(server.url + "/adapters/default/nope")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    assert page.locator("#message").inner_text() == "no adapter default/nope"
    shot(page, tmp_path, "not-found")
    response = page.goto(server.url + "/?rank=abc")
    assert response is not None and response.status == 400
    assert page.locator("#message").inner_text().startswith("rank='abc': Input should be")
    response = page.goto(server.url + "/diff?x=nope@1.0.0&y=nope@2.0.0")
    assert response is not None and response.status == 404
    page.close()


def _offline(blocked: list[str]) -> Callable[[Route], None]:
    """Abort every request that would leave the machine (a CDN, fonts, a validator badge)."""

    def route(r: Route) -> None:
        if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    return route


@sqlite_only
def test_api_docs_render_without_internet(
    browser: Browser, serve: Callable[..., Server], tmp_path: Path
) -> None:
    server = serve()
    context = browser.new_context()
    blocked: list[str] = []
    context.route("**/*", _offline(blocked))
    page = context.new_page()
    page.goto(server.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert page.locator(".swagger-ui .opblock").count() >= 10
    assert "stance registry" in page.locator(".swagger-ui .info .title").inner_text()
    shot(page, tmp_path, "docs")
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id]", timeout=30_000)
    assert page.get_by_text("/v1/resolve").count() >= 1
    shot(page, tmp_path, "redoc")
    assert not [u for u in blocked if "cdn" in u or "fonts" in u], blocked
    context.close()


def test_version_files_are_served_by_name(
    client: TestClient, operator: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    operator.publish(adapters["curious"], "role@1.0.0", alias="prod")
    base = "/adapters/default/role/1.0.0/files"
    readme = client.get(f"{base}/README.md")
    assert readme.status_code == 200 and readme.headers["content-type"] == (
        "text/plain; charset=utf-8"
    )
    assert readme.headers["content-disposition"] == "inline; filename*=UTF-8''README.md"
    assert readme.content == (adapters["curious"] / "README.md").read_bytes()
    assert readme.headers["cache-control"].endswith("immutable")
    config = client.get(f"{base}/adapter_config.json")
    assert config.headers["content-type"] == "application/json" and config.json()["r"] == 8
    weights = client.get(f"{base}/adapter_model.safetensors")
    assert weights.headers["content-type"] == "application/octet-stream"
    assert weights.headers["content-disposition"].startswith("attachment;")
    assert weights.content == (adapters["curious"] / "adapter_model.safetensors").read_bytes()
    saved = client.get(f"{base}/README.md", params={"download": "true"})
    assert saved.headers["content-disposition"] == "attachment; filename*=UTF-8''README.md"
    moving = client.get("/adapters/default/role/prod/files/README.md")
    assert moving.status_code == 200 and moving.headers["cache-control"] == "no-cache"
    missing = client.get(f"{base}/secrets.txt")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
