"""The batch client against the local OpenAI-compatible server: faults, budgets, resume."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest
from openai_server import OpenAITestServer, ServerConfig, write_chat_requests
from rich.console import Console

from instructgen.client.pricing import cost_usd
from instructgen.client.runner import (
    ASSUMED_COMPLETION_TOKENS,
    AccountError,
    RunConfig,
    load_requests,
    run_requests,
)
from instructgen.errors import InputError

KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def serve():
    servers = []

    def start(**config) -> OpenAITestServer:
        server = OpenAITestServer(ServerConfig(**config)).start_in_thread()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def send(tmp_path, server, n=5, faults=None, key=KEY, **config):
    """Write n requests, run them against `server`; return (summary, output lines by id)."""
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, n, faults)
    config = {"backoff_initial_s": 0.01, "timeout_s": 5.0} | config
    summary = run_requests(
        requests,
        tmp_path / "responses.jsonl",
        tmp_path / "journal.sqlite",
        RunConfig(base_url=server.base_url, **config),
        Console(file=io.StringIO()),
        key,
    )
    lines = [json.loads(x) for x in (tmp_path / "responses.jsonl").read_text().splitlines()]
    return summary, {line["custom_id"]: line for line in lines}


def journal_row(tmp_path, cid):
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.row_factory = sqlite3.Row
    return db.execute("SELECT * FROM requests WHERE custom_id = ?", (cid,)).fetchone()


def test_every_request_gets_exactly_one_line_in_input_order(tmp_path, serve):
    summary, by_id = send(tmp_path, serve(), n=12)
    lines = (tmp_path / "responses.jsonl").read_text().splitlines()
    assert [json.loads(x)["custom_id"] for x in lines] == [
        f"coco-{i}-conversation" for i in range(12)
    ]
    assert summary.done == 12 and summary.failed == 0
    body = by_id["coco-0-conversation"]["response"]["body"]
    assert body["choices"][0]["message"]["content"].startswith("Question: ")


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "drop", "truncated", "slow"])
def test_retryable_faults_are_retried_until_the_request_succeeds(tmp_path, serve, fault):
    server = serve(slow_s=2.5, injected_retry_after_ms=50)
    summary, by_id = send(tmp_path, server, n=2, faults={0: f"{fault},{fault}"}, timeout_s=1.0)
    assert by_id["coco-0-conversation"]["response"]["status_code"] == 200
    assert journal_row(tmp_path, "coco-0-conversation")["attempts"] == 3
    assert sum(summary.errors.values()) == 2


def test_a_bad_request_fails_alone_at_once_without_retry(tmp_path, serve):
    server = serve()
    summary, by_id = send(tmp_path, server, n=2, faults={0: "400"})
    line = by_id["coco-0-conversation"]
    assert line["response"] is None
    assert line["error"]["code"] == "http_400"
    assert sum(server.attempts.values()) == 2  # one each
    assert summary.failed == 1


def test_after_max_attempts_the_request_is_a_failed_line_with_its_last_error(tmp_path, serve):
    summary, by_id = send(tmp_path, serve(), n=1, faults={0: "500,502,503,500"}, max_attempts=3)
    error = by_id["coco-0-conversation"]["error"]
    assert error["code"] == "http_503"
    assert "after 3 attempt(s)" in error["message"]
    assert summary.failed == 1


@pytest.mark.parametrize(
    ("fault", "finish_reason", "content"),
    [("length", "length", None), ("content_filter", "content_filter", None), ("empty", "stop", "")],
)
def test_finish_reasons_and_empty_content_are_recorded_as_returned(
    tmp_path, serve, fault, finish_reason, content
):
    server = serve()
    _, by_id = send(tmp_path, server, n=1, faults={0: fault})
    choice = by_id["coco-0-conversation"]["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == finish_reason
    if content is not None:
        assert choice["message"]["content"] == content
    assert sum(server.attempts.values()) == 1  # not retried
    assert journal_row(tmp_path, "coco-0-conversation")["finish_reason"] == finish_reason


def test_the_request_budget_is_respected_without_429s(tmp_path, serve):
    server = serve(rpm=1200)  # 20 requests per second
    summary, _ = send(tmp_path, server, n=30, rpm=1200)
    assert server.statuses.get("429_budget", 0) == 0
    assert summary.wall_s >= (30 - 5) / 20 - 0.1  # paced, not burst
    span = server.admitted_at[-1] - server.admitted_at[0]
    assert (len(server.admitted_at) - 1 - 5) / span <= 20 * 1.1  # after the 0.25 s burst


def test_the_token_budget_paces_requests_by_their_token_cost(tmp_path, serve):
    server = serve(tpm=60_000)  # 1,000 tokens per second; each request ~ 90 tokens
    requests = load_requests(write_requests_at(tmp_path, 20))
    tokens = sum(r.tokens for r in requests)
    summary, _ = send(tmp_path, server, n=20, tpm=60_000)
    assert server.statuses.get("429_budget", 0) == 0
    assert summary.wall_s >= (tokens - 250) / 1000 - 0.1


def write_requests_at(tmp_path, n):
    path = tmp_path / "probe.jsonl"
    write_chat_requests(path, n)
    return path


def test_server_rate_limit_headers_lower_the_client_budget(tmp_path, serve):
    server = serve(rpm=1200)  # the client is told 100,000 RPM; the server says 1,200
    summary, _ = send(tmp_path, server, n=60, rpm=100_000)
    assert summary.done == 60
    assert server.statuses.get("429_budget", 0) <= 12  # only the first burst, then none


def gaps(server) -> list[float]:
    return [b - a for a, b in zip(server.admitted_at, server.admitted_at[1:], strict=False)]


def test_a_429_showing_the_budget_spent_pauses_every_sender_for_its_retry_after(tmp_path, serve):
    server = serve(injected_retry_after_ms=600)
    send(tmp_path, server, n=8, faults={0: "spent"}, max_in_flight=2)
    assert max(gaps(server)) >= 0.5


def test_a_stray_429_with_budget_left_delays_only_its_own_request(tmp_path, serve):
    server = serve(injected_retry_after_ms=1500)
    summary, _ = send(tmp_path, server, n=24, faults={0: "429"}, max_in_flight=2, rpm=600)
    assert max(gaps(server)) < 0.75  # the other sender goes on at 10 per second
    assert summary.done == 24 and journal_row(tmp_path, "coco-0-conversation")["attempts"] == 2


@pytest.mark.parametrize("rate_headers", [True, False], ids=["headers", "no-headers"])
def test_a_per_second_budget_is_used_to_nine_tenths_without_a_429(tmp_path, serve, rate_headers):
    server = serve(rpm=1800, window="second", rate_headers=rate_headers)  # 30 per second
    summary, _ = send(tmp_path, server, n=75, rpm=1800, max_in_flight=16)
    assert summary.done == 75
    assert server.statuses.get("429_budget", 0) == 0
    span = server.admitted_at[-1] - server.admitted_at[0]
    assert (75 - 1) / span >= 0.9 * 30


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("invalid_api_key", "the API key was refused"),
        ("forbidden", "may not use this endpoint"),
        ("insufficient_quota", "out of credit"),
        ("model_not_found", "model 'gpt-4o' does not exist"),
        ("invalid_model", "refused the model or the key"),
    ],
)
def test_an_account_error_stops_the_run_and_a_rerun_after_the_fix_finishes(
    tmp_path, serve, error, says
):
    server = serve(account_error=error, account_error_after=6)
    with pytest.raises(AccountError, match=f"{says}.*rerun.* wait in .*journal.sqlite"):
        send(tmp_path, server, n=40, max_in_flight=4)
    assert sum(server.attempts.values()) <= 6 + 4  # nothing sent after those in flight
    assert not (tmp_path / "responses.jsonl").exists()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    statuses = dict(db.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall())
    assert statuses["done"] == 6 and statuses["pending"] == 34 and "failed" not in statuses
    server.config.account_error = None  # the user fixed the account
    summary, by_id = send(tmp_path, server, n=40, max_in_flight=4)
    assert summary.done == 40 and summary.sent == 34 and len(by_id) == 40


def test_a_stalled_call_at_the_tail_is_sent_again_and_the_first_answer_wins(tmp_path, serve):
    server = serve(slow_s=6.0)
    summary, by_id = send(tmp_path, server, n=30, faults={29: "slow"}, max_in_flight=8)
    assert summary.wall_s < 4.0
    assert summary.hedged == 1 and summary.done == 30
    assert by_id["coco-29-conversation"]["response"]["status_code"] == 200


def test_cost_comes_from_usage_with_cached_prompt_tokens(tmp_path, serve):
    send(tmp_path, serve(), n=1)
    row = journal_row(tmp_path, "coco-0-conversation")
    assert row["cached_tokens"] == row["prompt_tokens"] // 2 > 0
    expected = cost_usd(
        "gpt-4o", row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]
    )
    assert row["cost_usd"] == pytest.approx(expected)


def test_a_second_run_sends_nothing_already_done(tmp_path, serve):
    server = serve()
    send(tmp_path, server, n=6)
    summary, by_id = send(tmp_path, server, n=6)
    assert summary.sent == 0 and summary.skipped == 6
    assert len(by_id) == 6
    assert sum(server.attempts.values()) == 6


def test_a_second_run_retries_the_requests_that_failed(tmp_path, serve):
    server = serve()
    send(tmp_path, server, n=2, faults={1: "500,500"}, max_attempts=2)
    summary, by_id = send(tmp_path, server, n=2, faults={1: "500,500"}, max_attempts=2)
    assert summary.sent == 1 and summary.failed == 0
    assert by_id["coco-1-conversation"]["response"]["status_code"] == 200


def test_the_api_key_is_in_no_file_written_nor_in_the_error(tmp_path, serve):
    send(tmp_path, serve(), n=3, faults={1: "500,drop"})
    (tmp_path / "again").mkdir()
    with pytest.raises(AccountError) as stopped:  # the server echoes the key it was sent
        send(tmp_path / "again", serve(), n=3, faults={0: "401"})
    assert "[redacted]" in str(stopped.value) and KEY[:12] not in str(stopped.value)
    assert "[redacted]" in journal_row(tmp_path / "again", "coco-0-conversation")["last_error"]
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert KEY.encode() not in path.read_bytes(), path.name
        assert KEY[:12].encode() not in path.read_bytes(), path.name


def test_a_duplicate_custom_id_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "requests.jsonl"
    write_chat_requests(path, 3)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(
        InputError, match=r"requests.jsonl:4: custom_id 'coco-1-conversation'.*line 2"
    ):
        load_requests(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"url": "/v1/chat/completions", "body": {}}', "missing custom_id"),
        ('{"custom_id": "a", "url": "/v1/chat/completions", "body": {"model": "m"}}', "messages"),
        ('{"custom_id": "a", "url": "chat", "body": {"model": "m", "messages": []}}', "url"),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", '
            '"body": {"model": "m", "messages": [], "max_tokens": "x"}}',
            "a: body.max_tokens must be a positive integer",
        ),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", '
            '"body": {"model": "m", "messages": [], "max_completion_tokens": 1.5}}',
            "max_completion_tokens must be a positive integer",
        ),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", '
            '"body": {"model": "m", "messages": ["hi"]}}',
            r"a: body.messages\[0\] must be an object with a role and a content",
        ),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", '
            '"body": {"model": "m", "messages": [{"role": "user"}]}}',
            r"messages\[0\] must be an object with a role and a content",
        ),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", '
            '"body": {"model": "m", "messages": [{"role": "user", "content": 5}]}}',
            r"messages\[0\].content must be a string or a list of parts",
        ),
        (
            '{"custom_id": "a", "url": "/v1/chat/completions", "body": {"model": "m", '
            '"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}}',
            r"messages\[0\].content must be a string or a list of parts",
        ),
    ],
)
def test_a_bad_request_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "requests.jsonl"
    write_chat_requests(path, 1)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(InputError, match=rf"requests.jsonl:2: .*{message}"):
        load_requests(path)


def test_token_cost_of_a_request_is_its_messages_plus_max_tokens(tmp_path):
    path = tmp_path / "requests.jsonl"
    write_chat_requests(path, 1, max_tokens=300)
    (req,) = load_requests(path)
    assert req.max_tokens == 300
    assert req.tokens == req.prompt_tokens + 300 and req.prompt_tokens > 10


def test_a_request_may_give_multimodal_content_parts_and_no_max_tokens(tmp_path):
    path = tmp_path / "requests.jsonl"
    content = [{"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {}}]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    line = {"custom_id": "a", "url": "/v1/chat/completions", "body": body}
    path.write_text(json.dumps(line) + "\n")
    (req,) = load_requests(path)
    assert req.max_tokens == ASSUMED_COMPLETION_TOKENS
    assert req.prompt_tokens > 3
