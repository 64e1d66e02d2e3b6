"""`instructgen run` as a user runs it: a subprocess against the test server in another process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai_server import write_chat_requests

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTGEN = ROOT / ".venv" / "bin" / "instructgen"
KEY = "sk-test-cli-0123456789SECRET"


@pytest.fixture
def serve_process():
    """Starts test servers in their own processes (`serve_process(*options)` -> base URL)."""
    procs = []

    def start(*options: str) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "openai_server.py"), *options],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc.stdout.readline().split()[-1]

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def server_process(serve_process):
    """A slowed test server in its own process; yields its base URL."""
    return serve_process("--latency", "0.2")


def cli(*args, **kwargs) -> subprocess.Popen:
    env = os.environ | {"OPENAI_API_KEY": KEY}
    env.pop("OPENAI_BASE_URL", None)
    env |= kwargs.pop("env", {})
    return subprocess.Popen(
        [str(INSTRUCTGEN), "run", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def done_count(journal: Path) -> int:
    try:
        db = sqlite3.connect(journal, timeout=5)
        return db.execute("SELECT count(*) FROM requests WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_kill_9_mid_run_then_resume_loses_nothing_and_repays_at_most_the_in_flight(
    tmp_path, server_process
):
    requests, out, journal = (
        tmp_path / "requests.jsonl",
        tmp_path / "out.jsonl",
        tmp_path / "j.sqlite",
    )
    ids = write_chat_requests(requests, 200)
    args = [requests, "-o", out, "--journal", journal, "--base-url", server_process]
    args += ["--max-in-flight", "8"]
    first = cli(*args)
    deadline = time.monotonic() + 60
    while done_count(journal) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 40 <= done_count(journal) < 200
    assert not out.exists()

    second = cli(*args)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)  # each exactly once
    assert all(line["response"]["status_code"] == 200 for line in lines)
    stats = httpx.get(server_process.removesuffix("/v1") + "/_stats").json()
    assert len(stats["answered"]) == 200
    assert stats["duplicates"] <= 8


def test_without_a_terminal_the_run_prints_one_plain_summary(tmp_path, server_process):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 5)
    proc = cli(requests, "-o", tmp_path / "out.jsonl", "--base-url", server_process)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out == ""
    assert err.count("\n") <= 3 and "5 done, 0 failed of 5" in err
    assert (tmp_path / "journal.sqlite").is_file()  # default: beside the output
    assert KEY not in err


def test_dry_run_prints_the_estimate_and_sends_nothing(tmp_path, server_process):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 4, max_tokens=100)
    proc = cli(requests, "--dry-run", "--base-url", server_process)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "4 of 4 requests to send" in err and "at most 400 completion tokens" in err
    assert "$" in err and "Nothing sent" in err
    stats = httpx.get(server_process.removesuffix("/v1") + "/_stats").json()
    assert stats["attempts"] == {}
    assert not (tmp_path / "journal.sqlite").exists()


def test_a_missing_key_is_one_red_line_naming_the_variable(tmp_path):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 1)
    proc = cli(requests, "-o", tmp_path / "out.jsonl", env={"OPENAI_API_KEY": ""})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "OPENAI_API_KEY is not set" in err and "Traceback" not in err


def test_a_bad_requests_file_is_one_error_line_not_a_traceback(tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"custom_id": "x"}\n')
    proc = cli(requests, "-o", tmp_path / "out.jsonl")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "requests.jsonl:1:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--rpm", "0"),
        ("--tpm", "0"),
        ("--rpm", "-5"),
        ("--max-in-flight", "0"),
        ("--max-attempts", "0"),
        ("--timeout", "0"),
        ("--poll-interval", "-1"),
    ],
)
def test_a_budget_or_duration_that_is_not_positive_is_a_usage_error(tmp_path, option, value):
    requests = tmp_path / "requests.jsonl"
    write_chat_requests(requests, 1)
    proc = cli(requests, "--dry-run", option, value)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert option in err and "Traceback" not in err


def test_an_account_error_is_one_red_line_and_the_rerun_after_the_fix_finishes(
    tmp_path, serve_process
):
    requests, output = tmp_path / "requests.jsonl", tmp_path / "responses.jsonl"
    write_chat_requests(requests, 20)
    no_credit = serve_process("--account-error", "insufficient_quota")
    proc = cli(requests, "-o", output, "--base-url", no_credit)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "out of credit" in err and "add credit" in err and "20 of 20 requests wait" in err
    assert not output.exists()
    proc = cli(requests, "-o", output, "--base-url", serve_process())
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(output.read_text().splitlines()) == 20
