"""CHAIR on the review page: figures on the summary, hallucinated words marked on a record
(TestClient, and a real headless Chromium)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from review_support import add_xss_record, copy_sources, csrf_of, imported, live_server
from test_review_browser import CHROMIUM_ARGS, chromium_path
from typer.testing import CliRunner

from instructgen.cli import app as cli
from instructgen.review import store
from instructgen.review.app import create_app

RECORD = "coco-30752-conversation"  # "Yes, a horse stands ..." about an image with no horse


@pytest.fixture
def sources(tmp_path, test_data) -> store.Sources:
    """The review fixtures plus their chair.json, written by `instructgen chair`."""
    plain = copy_sources(test_data, tmp_path)
    add_xss_record(plain)
    chair = tmp_path / "chair.json"
    args = ["chair", str(plain.records), "--contexts", str(plain.contexts), "-o", str(chair)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    return store.Sources(plain.records, plain.contexts, plain.quarantine, chair)


@pytest.fixture
def client(sources, tmp_path) -> TestClient:
    imported(tmp_path / "review.sqlite", sources).close()
    return TestClient(create_app(tmp_path / "review.sqlite", tmp_path / "images"))


def view(tmp_path, key: str) -> store.RecordView:
    conn = store.open_store(tmp_path / "review.sqlite")
    try:
        return store.get_record(conn, key)
    finally:
        conn.close()


def test_a_hallucinated_word_is_marked_in_its_answer(client, tmp_path):
    record = view(tmp_path, RECORD)
    assert record.hallucinated == (("horse", "horse"),)
    turn = record.turns[5]
    assert [t for t, c in turn.segments() if c] == ["horse"]
    assert "".join(t for t, _ in turn.segments()) == turn.value
    html = client.get(f"/records/{RECORD}").text
    assert '<mark class="hallucinated" title="CHAIR: horse is not in the image' in html
    assert html.count('<mark class="hallucinated"') == 1
    assert "names 1 object mention absent from the image (horse)" in html


def test_a_hyphenated_name_keeps_its_mark(tmp_path, test_data):
    sources = copy_sources(test_data, tmp_path)
    text = sources.records.read_text()
    sources.records.write_text(text.replace("a horse stands", "a teddy-bear stands"))
    chair = tmp_path / "chair.json"
    args = ["chair", str(sources.records), "--contexts", str(sources.contexts), "-o", str(chair)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    sources = store.Sources(sources.records, sources.contexts, sources.quarantine, chair)
    imported(tmp_path / "review.sqlite", sources).close()
    turn = view(tmp_path, RECORD).turns[5]
    assert [t for t, c in turn.segments() if c] == ["teddy-bear"]


def test_records_without_hallucination_have_no_mark(client):
    html = client.get("/records/coco-183872-conversation").text
    assert "<mark" not in html


def test_the_summary_shows_the_chair_figures(client):
    html = client.get("/summary").text
    assert "CHAIR: object hallucination" in html
    # 1 of 37 mentions, 1 of 11 records (the script-payload record names no object)
    assert "<td>2.7%</td><td>9.1%</td>" in html
    assert 'href="/?flag=chair_hallucination&amp;task=conversation"' in html


def test_the_chair_flag_lists_the_hallucinating_records(client):
    html = client.get("/", params={"flag": "chair_hallucination"}).text
    assert "<b>1</b> matching" in html and RECORD in html


def test_an_edit_that_moves_the_word_drops_its_mark(client, tmp_path):
    token = csrf_of(client.get("/").text)
    new = "No horse; a truck waits."
    client.post(f"/records/{RECORD}/turns/5", data={"csrf": token, "value": new})
    assert view(tmp_path, RECORD).turns[5].marks == ()


def test_without_a_chair_json_the_page_has_no_chair(tmp_path, test_data):
    sources = copy_sources(test_data, tmp_path)
    imported(tmp_path / "review.sqlite", sources).close()
    client = TestClient(create_app(tmp_path / "review.sqlite", tmp_path / "images"))
    assert "CHAIR" not in client.get("/summary").text
    assert "<mark" not in client.get(f"/records/{RECORD}").text


@pytest.mark.browser
def test_the_marked_word_shows_in_chromium(sources, tmp_path):
    from playwright.sync_api import sync_playwright

    imported(tmp_path / "review.sqlite", sources).close()
    with (
        live_server(tmp_path / "review.sqlite", tmp_path / "images") as url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + f"/records/{RECORD}")
        mark = page.locator("#turn-5 mark.hallucinated")
        assert mark.inner_text() == "horse"
        assert "horse is not in the image" in mark.get_attribute("title")
        colour = mark.evaluate("m => getComputedStyle(m).backgroundColor")
        assert colour == "rgb(255, 215, 208)"
        page.screenshot(path=tmp_path / "review-chair.png")
        page.goto(url + "/summary")
        assert page.locator("section.chair tbody tr").count() == 4  # all + 3 tasks
        browser.close()
    assert (tmp_path / "review-chair.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_review_reads_the_chair_json_beside_the_records(sources, tmp_path):
    """As `build` leaves them: chair.json in the records' folder, no --chair needed."""
    import subprocess
    import sys

    from review_support import first_answer, free_port

    port = free_port()
    command = [
        sys.executable, "-m", "instructgen.cli", "review", str(sources.records),
        "--contexts", str(sources.contexts), "--db", str(tmp_path / "review.sqlite"),
        "--port", str(port),
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert f"CHAIR marks from {tmp_path / 'chair.json'}" in server.stderr.readline()
        page = first_answer(f"http://127.0.0.1:{port}/records/{RECORD}")
        assert '<mark class="hallucinated"' in page.text
    finally:
        server.terminate()
        server.wait(10)
