"""``/compare`` in headless Chromium on a real server, its JSON twin, and the remote client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser

from registry import RemoteRegistry
from registry.api import svg
from registry.embedded import EmbeddedRegistry
from registry.settings import Settings
from tests.api.conftest import Server
from tests.api.test_pages import browser  # noqa: F401 - the module's Chromium fixture

SPECS = ["curious-uncertainty@prod", "confident-expertise@1.0.0", "team-a/engaged-difficulty"]


@pytest.fixture
def published(operator: EmbeddedRegistry, adapters: dict[str, Path]) -> EmbeddedRegistry:
    operator.publish(adapters["curious"], "curious-uncertainty@1.0.0", alias="prod")
    operator.publish(adapters["confident"], "confident-expertise@1.0.0")
    operator.publish(adapters["engaged"], "team-a/engaged-difficulty@0.1.0")
    return operator


def test_the_json_twin_is_the_registry_comparison(
    client: TestClient, published: EmbeddedRegistry, adapters: dict[str, Path]
) -> None:
    response = client.get("/v1/compare", params={"spec": SPECS})
    assert response.status_code == 200
    assert response.json() == published.compare(SPECS).model_dump(mode="json")
    refusals = [
        ({"spec": SPECS[:1]}, 400, "bad_spec"),
        ({}, 400, "bad_spec"),
        ({"spec": [SPECS[0]] * 9}, 400, "bad_spec"),
        ({"spec": [SPECS[0], "nope@1.0.0"]}, 404, "not_found"),
        ({"spec": [SPECS[0], str(adapters["curious"])]}, 400, "bad_spec"),  # never a server path
    ]
    for params, status, code in refusals:
        refused = client.get("/v1/compare", params=params)
        assert refused.status_code == status, (params, refused.text)
        assert refused.json()["code"] == code and refused.headers["X-Error-Code"] == code
    form = client.get("/compare")
    assert form.status_code == 200 and 'name="spec"' in form.text  # no spec: the form alone
    page = client.get("/compare", params={"spec": [SPECS[0], "nope@1.0.0"]})
    assert page.status_code == 404 and page.headers["X-Error-Code"] == "not_found"
    assert page.headers["content-type"].startswith("text/html") and "nope" in page.text


def test_remote_compare_equals_the_embedded_one(
    serve: Callable[..., Server], published: EmbeddedRegistry, tmp_path: Path
) -> None:
    server = serve()
    with RemoteRegistry(server.url, settings=Settings(home=tmp_path / "client")) as remote:
        assert remote.compare(SPECS) == published.compare(SPECS)


def test_compare_page_in_the_browser(
    browser: Browser,  # noqa: F811
    serve: Callable[..., Server],
    published: EmbeddedRegistry,
    tmp_path: Path,
) -> None:
    server = serve()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url + "/")
    page.click("header a:text-is('compare')")  # the nav reaches the page, not /diff
    page.wait_for_url("**/compare")
    assert page.locator("#compare-form input[name=spec]").count() == 2
    page.locator("#compare-form input[name=spec]").nth(0).fill(SPECS[0])
    page.locator("#compare-form input[name=spec]").nth(1).fill(SPECS[1])
    page.click("#compare-form button[type=submit]")
    page.wait_for_url("**/compare?spec=*")
    assert page.locator("svg.cosine-matrix g.cell").count() == 4

    page.goto(server.url + "/compare?" + "&".join(f"spec={s}" for s in SPECS))
    expected = published.compare(SPECS)
    cells = page.locator("svg.cosine-matrix g.cell")
    assert cells.count() == 9
    off = cells.locator("xpath=self::*[@data-row='1' and @data-col='2']")
    assert float(off.get_attribute("data-value") or "nan") == pytest.approx(
        expected.cosine[1][2], abs=1e-5
    )
    for chart in ("delta-curves", "raw-curves"):
        curves = page.locator(f"svg.{chart} polyline")
        assert curves.count() == 3
        assert {curves.nth(i).get_attribute("data-series") for i in range(3)} == set(SPECS)
    assert page.locator("#layers tr").count() == 1 + 4  # header + 4 layers of the tiny model
    rows = page.locator("#adapters tr[data-spec]")
    assert rows.count() == 3 and "team-a/engaged-difficulty@0.1.0" in rows.nth(2).inner_text()
    assert (
        page.locator("#adapters .raw-cv").nth(0).inner_text()
        == f"{expected.adapters[0].a_layer_cv:.3f}"
    )
    page.click("#adapters >> text=default/curious-uncertainty@1.0.0")
    page.wait_for_url("**/adapters/default/curious-uncertainty/1.0.0")
    page.go_back()
    assert page.locator("#json").get_attribute("href", timeout=5000).startswith("/v1/compare?spec=")
    shot = tmp_path / "compare-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.close()


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0.0, 0.185, [0.0, 0.05, 0.1, 0.15, 0.2]),
        (3.38, 3.55, [3.35, 3.4, 3.45, 3.5, 3.55]),
        (0.0, 2.34, [0.0, 1.0, 2.0, 3.0]),
        (0.0, 0.0, [0.0, 0.25, 0.5, 0.75, 1.0]),  # a flat zero curve still gets an axis
    ],
)
def test_chart_axes_have_round_ticks_covering_the_data(
    lo: float, hi: float, ticks: list[float]
) -> None:
    assert svg.nice_ticks(lo, hi) == pytest.approx(ticks)
