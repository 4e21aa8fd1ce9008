"""The web UI end to end in headless Chromium (Playwright): search, pick a history, recommend, follow a prefix.

A live uvicorn server runs in a thread on a free loopback port. Screenshots are saved as test artifacts in
``$SEMID_TEST_ARTIFACTS`` (default: ``test-artifacts/`` at the repository root). Skipped without the
``playwright`` package or a Chromium binary (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import WordHashEmbedder, free_port

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*"),  # gradio's pandas calls
]

ARTIFACTS = Path(
    os.environ.get("SEMID_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)


@pytest.fixture(scope="module")
def server(serve_dir, one_torch_thread):
    """``http://127.0.0.1:PORT`` of a live server (API + UI) over the test serving directory."""
    import uvicorn

    from semid.serve.api import create_app
    from semid.serve.service import Service

    app = create_app(Service.load(serve_dir, embedder=WordHashEmbedder()), ui=True)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def pick(page, text: str) -> str:
    """Type ``text`` into the history picker and pick the first match; returns the item id picked."""
    box = page.locator("#history input").first
    box.click()
    box.fill(text)
    option = page.locator("#history [role=option]").first
    option.wait_for()
    label = option.get_attribute("aria-label")
    option.click()
    return label.rsplit(" · ", 1)[1]


def test_search_then_recommend_for_a_picked_history(server, page, serve_dir):
    page.goto(f"{server}/ui/")
    # search: type a query, press Enter, get the items by dense retrieval
    query = page.locator("#query textarea, #query input").first
    query.fill("matte lipstick")
    query.press("Enter")
    rows = page.locator("#search-output tr.result")
    rows.first.wait_for()
    assert rows.count() == 10
    assert "dense retrieval (dense)" in page.locator("#search-output .semid-note").inner_text()
    titles = rows.locator("td.title").all_inner_texts()
    assert "Lipstick" in titles[0] and "Matte" in titles[0]
    sid = rows.first.locator("code.sid").inner_text()
    assert sid.count("-") == 2  # a 3-level Semantic ID on every row
    shot = screenshot(page, "serve_ui_search.png")

    # recommend: pick a history by typing parts of titles, then ask
    page.get_by_role("tab", name="Recommend").click()
    picked = [pick(page, "Lipstick"), pick(page, "Mascara")]
    page.locator("h2", has_text="semid").click()  # close the picker's list
    page.locator("#history [role=listbox]").wait_for(state="hidden")
    assert all(p.startswith("D") for p in picked) and len(set(picked)) == 2
    page.locator("#recommend-button").click()
    recs = page.locator("#rec-output tr.result")
    recs.first.wait_for()
    assert recs.count() == 10
    assert "tiger recommends after a history of 2" in page.locator("#rec-output .semid-note").inner_text()
    shot = screenshot(page, "serve_ui_recommend.png")
    assert shot.stat().st_size > 10_000

    # every result links to the items that share its ID prefix
    link = recs.first.locator("a.prefix-link")
    prefix = link.inner_text().split("-*")[0]
    link.click()
    page.locator("#prefix-output tr.result").first.wait_for()
    note = page.locator("#prefix-output .semid-note").inner_text()
    assert f"share the prefix {prefix}" in note
    ids = page.locator("#prefix-output code.sid").all_inner_texts()
    assert ids and all(i.startswith(prefix + "-") for i in ids)
    screenshot(page, "serve_ui_prefix.png")


def test_model_tab_shows_the_report_pictures(server, page):
    page.goto(f"{server}/ui/")
    page.get_by_role("tab", name="Model").click()
    frame = page.frame_locator("#report")
    frame.locator("h2", has_text="Codebook usage per level").wait_for()
    assert frame.locator("img").count() == 4
    screenshot(page, "serve_ui_model.png")


def test_a_bad_query_shows_one_line_instead_of_results(server, page):
    page.goto(f"{server}/ui/")
    query = page.locator("#query textarea, #query input").first
    query.fill("   ")
    page.locator("#search-button").click()
    error = page.locator("#search-output .semid-error")
    error.wait_for()
    assert error.inner_text() == "the query is empty: ask for something, e.g. 'a matte red lipstick'"
