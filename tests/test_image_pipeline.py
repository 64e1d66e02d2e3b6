"""Image requests through the rest of the pipeline: run (direct and Batch API), build, review,
and the CLI's errors and figures."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai_server import OpenAITestServer, ServerConfig
from rich.console import Console

from instructgen.client import batch_api
from instructgen.client.runner import RunConfig, run_requests
from instructgen.curate.build import build
from instructgen.generate.coco import write_contexts
from instructgen.generate.images import ImageInput
from instructgen.generate.render import render_requests
from instructgen.review import store
from instructgen.review.app import create_app

ROOT = Path(__file__).resolve().parent.parent
INSTRUCTGEN = ROOT / ".venv" / "bin" / "instructgen"
KEY = "sk-test-images-0123456789SECRET"
LIMIT = 3


@pytest.fixture
def server():
    server = OpenAITestServer(ServerConfig(batch_polls=2)).start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def job(test_data, tmp_path) -> dict[str, Path]:
    """Contexts of the real COCO sample and their inline-image requests."""
    coco = test_data / "coco_train2017"
    contexts, requests = tmp_path / "contexts.jsonl", tmp_path / "requests.jsonl"
    write_contexts(
        coco / "annotations" / "captions_train2017.json",
        contexts,
        coco / "annotations" / "instances_train2017.json",
        limit=LIMIT,
    )
    render_requests(contexts, requests, image=ImageInput("inline", images_dir=coco / "train2017"))
    return {"contexts": contexts, "requests": requests, "images": coco / "train2017"}


def test_the_token_budget_is_charged_with_each_inline_image_by_the_published_formula(job):
    from PIL import Image

    from instructgen.client.image_tokens import image_tokens
    from instructgen.client.runner import load_requests
    from instructgen.tokens import TokenCounter

    lines = [json.loads(x) for x in job["requests"].read_text().splitlines()]
    contexts = {c["image_id"]: c for c in map(json.loads, job["contexts"].read_text().splitlines())}
    for line, request in zip(lines, load_requests(job["requests"]), strict=True):
        body = line["body"]
        image_id = int(line["custom_id"].split("-")[1])
        with Image.open(job["images"] / contexts[image_id]["file_name"]) as img:
            expected = image_tokens(body["model"], *img.size, "high")
        assert expected and request.image_tokens == expected
        text = TokenCounter(body["model"]).count_messages(body["messages"])
        assert request.tokens == text + expected + body["max_tokens"]


def test_a_direct_run_sends_exactly_one_image_part_per_request(job, server, tmp_path):
    summary = run_requests(
        job["requests"],
        tmp_path / "responses.jsonl",
        tmp_path / "journal.sqlite",
        RunConfig(base_url=server.base_url, timeout_s=10.0),
        Console(file=io.StringIO()),
        KEY,
    )
    assert summary.done == LIMIT * 3
    assert list(server.stats()["image_parts"].values()) == [1] * LIMIT * 3


def test_a_batch_api_run_sends_exactly_one_image_part_per_request(job, server, tmp_path):
    summary = batch_api.run_batch(
        job["requests"],
        tmp_path / "responses.jsonl",
        tmp_path / "journal.sqlite",
        server.base_url,
        0.01,
        Console(file=io.StringIO()),
        KEY,
    )
    assert summary.done == LIMIT * 3
    assert list(server.stats()["image_parts"].values()) == [1] * LIMIT * 3


@pytest.fixture
def built(job, server, tmp_path) -> dict:
    """The inline-image job run against the test server and built into tmp_path/out."""
    responses = tmp_path / "responses.jsonl"
    run_requests(
        job["requests"],
        responses,
        tmp_path / "journal.sqlite",
        RunConfig(base_url=server.base_url, timeout_s=10.0),
        Console(file=io.StringIO()),
        KEY,
    )
    return build(responses, job["requests"], job["contexts"], tmp_path / "out")


def test_build_records_the_image_mode_on_each_record_and_counts_it(built, tmp_path):
    stats = built
    records = json.loads((tmp_path / "out" / "llava_instruct.json").read_text())
    assert records and all(r["image_mode"] == "inline" for r in records)
    assert stats["records_per_image_mode"] == {"none": 0, "url": 0, "inline": len(records)}


def review_page(job, out: Path, custom_id: str) -> str:
    """The review page of `custom_id`, with out/'s records and quarantine imported."""
    sources = store.Sources(out / "llava_instruct.json", job["contexts"], out / "quarantine.jsonl")
    conn = store.open_store(out / "review.sqlite")
    store.import_sources(conn, sources)
    conn.close()
    client = TestClient(create_app(out / "review.sqlite", job["images"]))
    return client.get(f"/records/{custom_id}").text


def test_the_review_page_shows_the_image_mode(job, built, tmp_path):
    cid = json.loads((tmp_path / "out" / "llava_instruct.json").read_text())[0]["custom_id"]
    page = review_page(job, tmp_path / "out", cid)
    assert '<span class="pill image-mode"' in page and ">image: inline</span>" in page


def test_a_quarantined_response_keeps_its_image_mode_on_the_review_page(job, built, tmp_path):
    responses = tmp_path / "responses.jsonl"
    lines = responses.read_text().splitlines()
    first = json.loads(lines[0])
    first["response"]["body"]["choices"][0]["message"]["content"] = ""  # an empty answer
    responses.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    build(responses, job["requests"], job["contexts"], tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").open()]
    [row] = [r for r in rows if r["custom_id"] == first["custom_id"]]
    assert (row["reason"], row["image_mode"]) == ("empty", "inline")
    assert ">image: inline</span>" in review_page(job, tmp_path / "out", row["custom_id"])


def instructgen(*args) -> subprocess.CompletedProcess:
    if not INSTRUCTGEN.exists():
        pytest.skip("needs the project's .venv (make install)")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [str(INSTRUCTGEN), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def test_inline_without_an_images_folder_is_one_red_line(job, tmp_path):
    result = instructgen("render", job["contexts"], "-o", tmp_path / "r.jsonl", "--image", "inline")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --image inline needs --images DIR (the folder of the JPEG files)"
    ]


def test_an_image_option_without_image_is_one_red_line_not_silently_text_only(job, tmp_path):
    out = tmp_path / "r.jsonl"
    result = instructgen("render", job["contexts"], "-o", out, "--image-detail", "low")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[0].startswith("error: --image-base-url, --images")
    assert not out.exists()


def test_estimate_and_dry_run_show_image_tokens_apart(job, tmp_path):
    requests = tmp_path / "url.jsonl"
    rendered = instructgen(
        "render", job["contexts"], "-o", requests, "--image", "url", "--image-detail", "low"
    )
    assert rendered.returncode == 0, rendered.stderr
    estimate = instructgen("estimate", requests)
    assert estimate.returncode == 0, estimate.stderr
    assert "text tokens" in estimate.stdout and "image tok" in estimate.stdout
    assert f"{85 * LIMIT * 3:,}" in estimate.stdout  # contexts.jsonl beside: sizes known
    assert "run --batch-api would upload 1 input file(s)" in estimate.stderr
    dry = instructgen("run", requests, "--dry-run", "--journal", tmp_path / "j.sqlite")
    assert dry.returncode == 0, dry.stderr
    assert f"images: {LIMIT * 3} to send, {85 * LIMIT * 3:,} image tokens" in dry.stderr
