"""`run --batch-api`: the same job through the files and batches endpoints of the test server."""

from __future__ import annotations

import io
import json
import sqlite3

import openai
import pytest
from openai_server import OpenAITestServer, ServerConfig, write_chat_requests
from rich.console import Console

from instructgen.client import batch_api
from instructgen.client.journal import Journal
from instructgen.client.pricing import cost_usd
from instructgen.client.runner import RunConfig, load_requests, run_requests
from instructgen.errors import InstructgenError

KEY = "sk-test-batch-0123456789SECRET"


@pytest.fixture
def server():
    server = OpenAITestServer(ServerConfig(batch_polls=3)).start_in_thread()
    yield server
    server.stop()


def run_batch(tmp_path, server, n=6, faults=None):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, n, faults)
    console = Console(file=io.StringIO(), width=200)
    summary = batch_api.run_batch(
        requests,
        tmp_path / "responses.jsonl",
        tmp_path / "journal.sqlite",
        server.base_url,
        0.01,
        console,
        KEY,
    )
    lines = [json.loads(x) for x in (tmp_path / "responses.jsonl").read_text().splitlines()]
    return summary, lines, console.file.getvalue()


def upload_without_polling(tmp_path, server, n, submit=None):
    """A run killed after uploading (the first `submit` of) its `n` requests; its client."""
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, n)
    index = load_requests(requests)
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url)
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.sync([(r.custom_id, r.line, r.sha256) for r in index], resend_changed=False)
        batch_api._submit(client, journal, requests, index[:submit])
    return client


def test_a_batch_job_writes_the_same_responses_file_as_a_direct_run(tmp_path, server):
    summary, lines, log = run_batch(tmp_path, server, n=6, faults={2: "400"})
    assert [x["custom_id"] for x in lines] == [f"coco-{i}-conversation" for i in range(6)]
    assert summary.done == 5 and summary.failed == 1
    assert lines[0]["response"]["status_code"] == 200
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("Question:")
    assert lines[2]["response"] is None and lines[2]["error"]["code"] == "http_400"
    assert "in_progress" in log and "completed" in log  # polled with progress


def test_batch_results_are_priced_at_the_batch_discount(tmp_path, server):
    run_batch(tmp_path, server, n=1)
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    p, c, cached, cost = db.execute(
        "SELECT prompt_tokens, completion_tokens, cached_tokens, cost_usd FROM requests"
    ).fetchone()
    assert cost == pytest.approx(cost_usd("gpt-4o", p, c, cached, batch=True))


def test_the_batch_id_is_in_the_journal(tmp_path, server):
    run_batch(tmp_path, server, n=2)
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert db.execute("SELECT batch_id, status FROM batches").fetchall() == [
        ("batch_test1", "collected")
    ]


def test_an_interrupted_poll_resumes_the_same_batch(tmp_path, server):
    client = upload_without_polling(tmp_path, server, 4)
    with Journal(tmp_path / "journal.sqlite") as journal:  # a run killed after creating its batch
        batch_api._adopt_or_create(client, journal)
    summary, lines, _ = run_batch(tmp_path, server, n=4)
    assert len(server.batches) == 1
    assert summary.done == 4 and len(lines) == 4


def test_a_batch_created_just_before_a_crash_is_found_by_its_input_file(tmp_path, server):
    client = upload_without_polling(tmp_path, server, 3)
    with Journal(tmp_path / "journal.sqlite") as journal:
        (rec,) = journal.open_batches()
    client.batches.create(  # created, but the process died before recording its id
        input_file_id=rec["input_file_id"], endpoint="/v1/chat/completions", completion_window="24h"
    )
    summary, _, _ = run_batch(tmp_path, server, n=3)
    assert len(server.batches) == 1
    assert summary.done == 3


def test_a_direct_run_refuses_while_a_batch_holds_the_requests(tmp_path, server):
    upload_without_polling(tmp_path, server, 2)
    with pytest.raises(InstructgenError, match="--batch-api"):
        run_requests(
            tmp_path / "requests.jsonl",
            tmp_path / "out.jsonl",
            tmp_path / "journal.sqlite",
            RunConfig(base_url=server.base_url),
            Console(file=io.StringIO()),
            KEY,
        )


def test_requests_are_split_into_batches_within_the_size_limit(tmp_path, monkeypatch):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 5)
    monkeypatch.setattr(batch_api, "MAX_BATCH_REQUESTS", 2)
    assert [len(c) for c in batch_api.chunks(load_requests(requests))] == [2, 2, 1]


def test_a_job_interrupted_between_two_uploads_sends_the_rest_on_rerun(tmp_path, server):
    upload_without_polling(tmp_path, server, 5, submit=2)  # killed after the first upload
    summary, lines, _ = run_batch(tmp_path, server, n=5)
    assert [x["custom_id"] for x in lines] == [f"coco-{i}-conversation" for i in range(5)]
    assert summary.done == 5
    assert len(server.batches) == 2


def test_a_failed_batch_writes_no_responses_file_and_a_rerun_sends_its_requests(tmp_path):
    server = OpenAITestServer(ServerConfig(batch_polls=2, batch_failures=1)).start_in_thread()
    try:
        with pytest.raises(InstructgenError, match=r"not written: 3 of 3 .*rerun"):
            run_batch(tmp_path, server, n=3)
        assert not (tmp_path / "responses.jsonl").exists()
        summary, lines, _ = run_batch(tmp_path, server, n=3)
    finally:
        server.stop()
    assert summary.done == 3 and len(lines) == 3
    assert [b["status"] for b in server.batches.values()] == ["failed", "completed"]


def test_resend_changed_sends_a_changed_done_request_again_through_a_batch(tmp_path, server):
    run_batch(tmp_path, server, n=2)
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 2, max_tokens=100)  # both lines changed
    summary = batch_api.run_batch(
        requests,
        tmp_path / "responses.jsonl",
        tmp_path / "journal.sqlite",
        server.base_url,
        0.01,
        Console(file=io.StringIO()),
        KEY,
        resend_changed=True,
    )
    assert summary.done == 2 and summary.sent == 2
    assert len(server.batches) == 2


def test_changing_a_request_while_its_batch_is_open_is_refused(tmp_path, server):
    upload_without_polling(tmp_path, server, 2)
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 2, max_tokens=100)
    with pytest.raises(InstructgenError, match="coco-0-conversation.*batch"):
        batch_api.run_batch(
            requests,
            tmp_path / "responses.jsonl",
            tmp_path / "journal.sqlite",
            server.base_url,
            0.01,
            Console(file=io.StringIO()),
            KEY,
        )
