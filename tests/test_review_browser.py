"""The review page in a real headless Chromium (Debian's), driven by Playwright.

Skipped only where no Chromium exists and CI is not set; under CI a missing browser fails.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from review_support import add_xss_record, copy_sources, imported, live_server

from instructgen.review import store

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium is installed (apt-get install chromium)")
    pytest.skip("no chromium found: apt-get install chromium to run the browser tests")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def review(tmp_path, test_data):
    """A served review of the fixtures (plus one record carrying script payloads)."""
    sources = copy_sources(test_data, tmp_path)
    add_xss_record(sources)
    imported(tmp_path / "review.sqlite", sources).close()
    with live_server(tmp_path / "review.sqlite", tmp_path / "images") as url:
        yield url, tmp_path / "review.sqlite"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def status_of(db, key: str) -> str:
    conn = store.open_store(db)
    try:
        return store.get_record(conn, key).status
    finally:
        conn.close()


def test_open_the_list_open_a_record_and_accept_with_the_keyboard(review, page):
    url, db = review
    page.goto(url + "/")
    assert page.locator("tr.row").count() == 13
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/records/coco-183872-detail")
    page.keyboard.press("a")
    page.wait_for_url("**/records/coco-183872-complex_reasoning")
    assert status_of(db, "coco-183872-detail") == "accepted"
    page.go_back()
    page.reload()
    assert page.locator(".record-head .pill.accepted").inner_text() == "accepted"


def test_reject_with_the_keyboard_and_a_typed_reason(review, page):
    url, db = review
    page.goto(url + "/records/coco-30752-conversation")
    page.keyboard.press("r")
    page.keyboard.type("horse not in the image")
    page.keyboard.press("Enter")
    page.wait_for_url("**/records/coco-30752-detail")
    page.goto(url + "/records/coco-30752-conversation")
    assert page.locator(".reject-reason").inner_text() == "Rejected: horse not in the image"


def test_edit_a_turn_with_the_keyboard_and_see_it_after_a_reload(review, page):
    url, db = review
    page.goto(url + "/records/coco-70133-conversation")
    for key in ("j", "j", "j", "j", "e"):
        page.keyboard.press(key)
    area = page.locator("#turn-3 textarea")
    area.fill("There are five pairs of scissors on the counter.")
    area.press("Control+Enter")
    page.wait_for_load_state()
    page.reload()
    turn = page.locator("#turn-3")
    assert turn.locator(".text").inner_text() == "There are five pairs of scissors on the counter."
    assert turn.locator(".chip.edited").count() == 1


def test_two_tabs_lose_nothing(review, browser):
    url, db = review
    context = browser.new_context()
    first, second = context.new_page(), context.new_page()
    first.goto(url + "/records/coco-183872-conversation")
    second.goto(url + "/records/coco-419474-conversation")
    first.keyboard.press("a")
    second.keyboard.press("a")
    first.wait_for_url("**/records/coco-183872-detail")
    second.wait_for_url("**/records/coco-419474-complex_reasoning")
    context.close()
    assert status_of(db, "coco-183872-conversation") == "accepted"
    assert status_of(db, "coco-419474-conversation") == "accepted"


def test_rescue_a_quarantined_response_then_export_the_accepted_json(review, page, tmp_path):
    url, db = review
    page.goto(url + "/records/coco-419474-detail")
    area = page.locator(".rescue-form textarea")
    area.fill(
        "Question: Describe this image in detail.\nAnswer: A bright kite flies over leafy trees."
    )
    area.press("Control+Enter")
    page.wait_for_selector(".pill.rescued")
    page.keyboard.press("a")
    page.wait_for_url("**/records/coco-70133-complex_reasoning")
    store.export(db, tmp_path / "accepted.json")
    exported = json.loads((tmp_path / "accepted.json").read_text())
    assert [r["custom_id"] for r in exported] == ["coco-419474-detail"]
    assert exported[0]["conversations"][1]["value"] == "A bright kite flies over leafy trees."


def test_a_script_payload_in_a_response_does_not_execute(review, page):
    url, _ = review
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url + "/records/coco-183872-xss")
    page.goto(url + "/?q=xss")
    page.goto(url + "/records/coco-183872-xss")
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert "<script>window.__xss = 1</script>" in page.locator("#turn-1 .text").inner_text()


def test_a_traversal_url_gets_404(review, page):
    url, _ = review
    for path in ("/images/%2e%2e/review_contexts.jsonl", "/images/..%2f..%2fetc%2fpasswd"):
        assert page.goto(url + path).status == 404
    assert page.goto(url + "/images/000000183872.jpg").status == 200


def test_screenshots_of_the_record_view_and_the_list(review, page, tmp_path):
    url, _ = review
    page.goto(url + "/records/coco-70133-conversation")
    page.keyboard.press("j")
    page.screenshot(path=tmp_path / "review-record.png")
    page.goto(url + "/?task=conversation")
    page.keyboard.press("j")
    page.screenshot(path=tmp_path / "review-list.png")
    for name in ("review-record.png", "review-list.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
