"""`instructgen review FILE ...` and `instructgen review export ...` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from review_support import copy_sources, first_answer, free_port, imported
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.review import store

RUNNER = CliRunner()


def test_review_file_starts_the_page_and_prints_its_url(tmp_path, test_data):
    sources = copy_sources(test_data, tmp_path)
    port = free_port()
    command = [
        sys.executable, "-m", "instructgen.cli", "review", str(sources.records),
        "--contexts", str(sources.contexts), "--quarantine", str(sources.quarantine),
        "--images", str(tmp_path / "images"), "--db", str(tmp_path / "review.sqlite"),
        "--port", str(port),
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        lines = [server.stderr.readline(), server.stderr.readline()]
        assert "10 records and 2 quarantined imported" in lines[0]
        assert f"http://127.0.0.1:{port}/" in lines[1]
        page = first_answer(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "coco-70133-conversation" in page.text
    finally:
        server.terminate()
        server.wait(10)


def test_review_export_writes_the_accepted_records(tmp_path, test_data):
    conn = imported(tmp_path / "review.sqlite", copy_sources(test_data, tmp_path))
    store.decide(conn, "coco-70133-detail", "accepted")
    conn.close()
    out = tmp_path / "accepted.json"
    result = RUNNER.invoke(
        app, ["review", "export", "--db", str(tmp_path / "review.sqlite"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert [r["custom_id"] for r in json.loads(out.read_text())] == ["coco-70133-detail"]


def test_review_export_of_rejected_records(tmp_path, test_data):
    conn = imported(tmp_path / "review.sqlite", copy_sources(test_data, tmp_path))
    store.decide(conn, "coco-70133-detail", "rejected", "vague")
    conn.close()
    out = tmp_path / "rejected.json"
    args = ["review", "export", "--db", str(tmp_path / "review.sqlite"), "-o", str(out)]
    assert RUNNER.invoke(app, [*args, "--status", "rejected"]).exit_code == 0
    assert len(json.loads(out.read_text())) == 1


def test_bad_input_is_one_red_line_and_exit_1(tmp_path, test_data):
    sources = copy_sources(test_data, tmp_path)
    sources.records.write_text('[{"id": 1}')
    command = [
        sys.executable, "-m", "instructgen.cli", "review", str(sources.records),
        "--contexts", str(sources.contexts), "--db", str(tmp_path / "review.sqlite"),
        "--port", str(free_port()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {sources.records}:1:11: invalid JSON: Expecting ',' delimiter"
    ]
