"""The review web app through FastAPI's TestClient: pages, decisions, safety."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from review_support import add_xss_record, copy_sources, csrf_of, imported

from instructgen.review import store
from instructgen.review.app import create_app, loopback_hosts, safe_image_path


@pytest.fixture
def setup(tmp_path, test_data):
    sources = copy_sources(test_data, tmp_path)
    xss_id = add_xss_record(sources)
    imported(tmp_path / "review.sqlite", sources).close()
    return tmp_path, xss_id


@pytest.fixture
def client(setup) -> TestClient:
    tmp_path, _ = setup
    return TestClient(create_app(tmp_path / "review.sqlite", tmp_path / "images"))


def stored(setup, key: str) -> store.RecordView:
    conn = store.open_store(setup[0] / "review.sqlite")
    try:
        return store.get_record(conn, key)
    finally:
        conn.close()


def post(client: TestClient, url: str, **form: str):
    token = csrf_of(client.get("/").text)
    return client.post(url, data={"csrf": token, **form}, follow_redirects=False)


def test_the_list_shows_rows_counts_and_filters(client):
    html = client.get("/").text
    assert "<b>13</b> matching" in html
    assert "coco-70133-conversation" in html
    assert '<option value="detail" >detail (4)</option>' in html.replace("  ", " ")


def test_the_list_filters_by_query_parameters(client):
    html = client.get("/", params={"task": "detail", "q": "snowboarder"}).text
    assert "<b>1</b> matching" in html and "coco-183872-detail" in html


def test_the_record_view_shows_image_boxes_captions_turns_and_flags(client):
    html = client.get("/records/coco-70133-conversation").text
    assert '<image href="/images/000000070133.jpg"' in html
    assert html.count(">scissors</text>") == 5
    assert "Hair cutting tools sitting on a table by a sink." in html
    assert "How many pairs of scissors can you see?" in html
    assert "coordinates_in_answer" in html
    assert "<kbd>a</kbd> accept" in html


def test_an_absent_image_gets_a_drawn_placeholder_with_the_boxes(client):
    html = client.get("/records/coco-419474-conversation").text
    assert "<image " not in html
    assert "000000419474.jpg not found" in html and ">kite</text>" in html


def test_a_post_without_the_csrf_token_is_refused_and_stores_nothing(client, setup):
    response = client.post("/records/coco-183872-detail/decision", data={"status": "accepted"})
    assert response.status_code == 403
    assert stored(setup, "coco-183872-detail").status == "pending"


def test_a_post_with_a_wrong_csrf_token_is_refused(client):
    data = {"csrf": "guess", "status": "accepted"}
    assert client.post("/records/coco-183872-detail/decision", data=data).status_code == 403


def test_accept_is_stored_and_goes_to_the_next_record_of_the_view(client, setup):
    response = post(
        client, "/records/coco-183872-detail/decision", status="accepted", f_task="detail"
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/records/coco-70133-detail?task=detail"
    assert stored(setup, "coco-183872-detail").status == "accepted"


def test_reject_without_a_reason_shows_the_error_and_stores_nothing(client, setup):
    response = post(client, "/records/coco-183872-detail/decision", status="rejected")
    assert response.status_code == 400 and "a rejection needs a reason" in response.text
    assert stored(setup, "coco-183872-detail").status == "pending"


def test_reject_with_a_reason_is_stored(client, setup):
    post(client, "/records/coco-30752-conversation/decision", status="rejected", reason="horse")
    view = stored(setup, "coco-30752-conversation")
    assert (view.status, view.reject_reason) == ("rejected", "horse")
    assert "Rejected: horse" in client.get("/records/coco-30752-conversation").text


def test_editing_a_turn_stores_it_and_marks_it_edited(client, setup):
    response = post(client, "/records/coco-183872-detail/turns/1", value="A rider on fresh snow.")
    assert response.headers["location"] == "/records/coco-183872-detail"
    assert stored(setup, "coco-183872-detail").turns[1] == store.Turn(
        "gpt", "A rider on fresh snow.", True
    )
    assert "edited</span>" in client.get("/records/coco-183872-detail").text


def test_a_quarantined_response_is_shown_and_rescued_by_editing(client, setup):
    html = client.get("/records/coco-419474-detail").text
    assert "Quarantined: finish_length" in html and "The kite is</pre>" in html
    assert "Question: Describe this image in detail.\nAnswer: A bright kite" in html
    post(
        client, "/records/coco-419474-detail/rescue", text="Question: Describe it.\nAnswer: A kite."
    )
    assert stored(setup, "coco-419474-detail").rescued


def test_a_bad_rescue_text_shows_why_and_keeps_what_was_typed(client):
    response = post(client, "/records/coco-419474-detail/rescue", text="A kite, typed by hand.")
    assert response.status_code == 400
    assert "line 1: text before the first &#39;Question:&#39; line" in response.text
    assert ">A kite, typed by hand.</textarea>" in response.text


def test_the_summary_shows_acceptance_per_task(client):
    post(client, "/records/coco-183872-detail/decision", status="accepted")
    post(client, "/records/coco-70133-detail/decision", status="rejected", reason="vague")
    html = client.get("/summary").text
    assert "Per task" in html and "<b>50%</b>" in html and "vague" in html


def test_an_unknown_record_is_a_404_page(client):
    response = client.get("/records/coco-1-detail")
    assert response.status_code == 404 and "no record" in response.text


def test_script_in_a_response_and_a_caption_is_shown_as_text(client, setup):
    _, xss_id = setup
    for url in ("/", f"/records/{xss_id}", "/?q=xss"):
        html = client.get(url).text
        assert "<script>window" not in html and "<img src=x" not in html
    html = client.get(f"/records/{xss_id}").text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in html
    assert html.count("&lt;img src=x onerror=") == 3  # the answer, its edit box, the caption


def test_pages_carry_a_strict_content_security_policy(client):
    policy = client.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_images_are_served_from_the_images_folder(client):
    response = client.get("/images/000000183872.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    "url",
    [
        "/images/../review_contexts.jsonl",
        "/images/%2e%2e/review_contexts.jsonl",
        "/images/..%2freview_contexts.jsonl",
        "/images/%2fetc%2fpasswd",
        "/images//etc/passwd",
        "/images/missing.jpg",
    ],
)
def test_traversal_and_absolute_image_paths_are_404(client, url):
    assert client.get(url).status_code == 404


def test_image_paths_outside_the_folder_or_not_images_are_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("secret")
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "images" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "outside.jpg").write_bytes(b"\xff\xd8")
    images = tmp_path / "images"
    assert safe_image_path(images, "a.jpg") == (images / "a.jpg").resolve()
    for name in ("notes.txt", "../outside.jpg", str(tmp_path / "outside.jpg"), "link.jpg", ""):
        assert safe_image_path(images, name) is None
    assert safe_image_path(None, "a.jpg") is None


def test_a_foreign_host_header_is_refused_when_hosts_are_pinned(setup):
    tmp_path, _ = setup
    pinned = TestClient(
        create_app(tmp_path / "review.sqlite", None, ["127.0.0.1"]), base_url="http://127.0.0.1"
    )
    assert pinned.get("/").status_code == 200
    assert pinned.get("/", headers={"host": "attacker.example"}).status_code == 400


def test_every_loopback_bind_address_pins_the_host_header():
    assert loopback_hosts("::1") == ["[::1]", "localhost", "127.0.0.1"]
    assert loopback_hosts("127.0.0.2") == ["127.0.0.2", "localhost", "127.0.0.1", "[::1]"]
    assert loopback_hosts("localhost") == ["localhost", "127.0.0.1", "[::1]"]
    assert loopback_hosts("0.0.0.0") is None and loopback_hosts("review.lan") is None


def test_an_ipv6_loopback_server_answers_its_own_names_and_refuses_others(setup):
    tmp_path, _ = setup
    pinned = TestClient(create_app(tmp_path / "review.sqlite", None, loopback_hosts("::1")))
    for host in ("[::1]:8765", "localhost:8765", "127.0.0.1:8765"):
        assert pinned.get("/", headers={"host": host}).status_code == 200
    assert pinned.get("/", headers={"host": "attacker.example:8765"}).status_code == 400
