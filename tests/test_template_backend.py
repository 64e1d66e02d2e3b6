"""template_backend.py: the offline naive baseline, answered in each task's response format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from instructgen.contracts import split_custom_id
from instructgen.curate.build import build
from instructgen.curate.parse import parse_response
from instructgen.generate.template_backend import captions_of, write_template_responses

ROOT = Path(__file__).resolve().parent.parent


def brief_phrasings() -> set[str]:
    text = (ROOT / "prompts" / "instructions" / "brief.txt").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip()}


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def requests_by_id(path: Path) -> dict[str, dict]:
    return {r["custom_id"]: r for r in read_lines(path)}


def test_captions_are_read_from_the_rendered_user_message():
    message = "Captions:\n- A dog runs.\n- A brown dog.\n\nObjects: none annotated."
    assert captions_of(message) == ["A dog runs.", "A brown dog."]
    assert captions_of("Objects: none annotated.") == []


def test_one_labelled_batch_output_line_per_request(test_data, tmp_path):
    out = tmp_path / "responses.jsonl"
    n = write_template_responses(test_data / "build_requests.jsonl", out)
    lines = read_lines(out)
    assert n == len(lines) == 18
    for line in lines:
        assert line["backend"] == "template" and line["error"] is None
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200
        assert body["model"] == "template-baseline"
        assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        assert body["choices"][0]["finish_reason"] == "stop"


def test_answers_are_captions_and_questions_brief_phrasings(test_data, tmp_path):
    requests = test_data / "build_requests.jsonl"
    out = tmp_path / "responses.jsonl"
    write_template_responses(requests, out)
    by_id = requests_by_id(requests)
    for line in read_lines(out):
        cid = line["custom_id"]
        task = split_custom_id(cid)[1]
        captions = captions_of(by_id[cid]["body"]["messages"][-1]["content"])
        text = line["response"]["body"]["choices"][0]["message"]["content"]
        turns = parse_response(task, text)
        assert isinstance(turns, tuple), (cid, turns)
        if task == "detail":
            assert all(c.rstrip(".") in turns[0].answer for c in captions)
        else:
            assert all(t.question in brief_phrasings() for t in turns)
            assert all(t.answer in captions for t in turns)
        if task == "conversation":
            assert len(turns) == len(captions)


def test_output_is_deterministic(test_data, tmp_path):
    requests = test_data / "build_requests.jsonl"
    write_template_responses(requests, tmp_path / "a.jsonl")
    write_template_responses(requests, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_build_labels_template_records_and_names_the_baseline_in_stats(test_data, tmp_path):
    requests = test_data / "build_requests.jsonl"
    write_template_responses(requests, tmp_path / "responses.jsonl")
    build(
        tmp_path / "responses.jsonl", requests, test_data / "build_contexts.jsonl", tmp_path / "o"
    )
    records = json.loads((tmp_path / "o" / "llava_instruct.json").read_text())
    assert len(records) == 18
    assert all(r["backend"] == "template" for r in records)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["models"] == {"template-baseline": 18}


def test_request_without_captions_becomes_an_error_line_that_build_quarantines(test_data, tmp_path):
    requests = tmp_path / "requests.jsonl"
    lines = (test_data / "build_requests.jsonl").read_text().splitlines()
    broken = json.loads(lines[0])
    broken["body"]["messages"][-1]["content"] = "Objects: none annotated."
    requests.write_text("\n".join([json.dumps(broken), *lines[1:]]) + "\n")
    write_template_responses(requests, tmp_path / "responses.jsonl")
    first = read_lines(tmp_path / "responses.jsonl")[0]
    assert first["response"] is None and first["backend"] == "template"
    assert "no captions block" in first["error"]["message"]
    stats = build(
        tmp_path / "responses.jsonl", requests, test_data / "build_contexts.jsonl", tmp_path / "o"
    )
    assert stats["quarantined"] == {"failed_request": 1, "total": 1}
    assert stats["records"]["total"] == 17


def test_run_command_with_template_backend_feeds_build(test_data, tmp_path):
    requests = test_data / "build_requests.jsonl"
    out = tmp_path / "responses.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructgen.cli",
            "run",
            str(requests),
            "--backend",
            "template",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stats = build(out, requests, test_data / "build_contexts.jsonl", tmp_path / "o")
    assert stats["records"]["total"] == 18 and stats["quarantined"]["total"] == 0
