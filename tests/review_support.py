"""Shared helpers of the review tests: fixture sources, an imported store, a live server."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from instructgen.review import store
from instructgen.review.app import create_app

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def copy_sources(test_data: Path, into: Path) -> store.Sources:
    """The review fixtures (real COCO train2017 contexts and images) copied into `into`."""
    for name in ("review_llava_instruct.json", "review_contexts.jsonl", "review_quarantine.jsonl"):
        shutil.copy(test_data / name, into / name)
    shutil.copytree(test_data / "review_images", into / "images")
    return store.Sources(
        into / "review_llava_instruct.json",
        into / "review_contexts.jsonl",
        into / "review_quarantine.jsonl",
    )


def add_xss_record(sources: store.Sources) -> str:
    """Append a record whose answer and a caption carry script payloads; return its id."""
    records = json.loads(sources.records.read_text())
    evil = json.loads(json.dumps(records[0]))
    evil["custom_id"] = "coco-183872-xss"
    evil["conversations"][1]["value"] = XSS
    records.append(evil)
    sources.records.write_text(json.dumps(records))
    lines = sources.contexts.read_text().splitlines()
    first = json.loads(lines[0])
    first["captions"].append(XSS)
    sources.contexts.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    return evil["custom_id"]


def imported(db: Path, sources: store.Sources):
    """An open connection to `db` with `sources` imported."""
    conn = store.open_store(db)
    store.import_sources(conn, sources)
    return conn


def csrf_of(html: str) -> str:
    """The CSRF token a page carries in its meta tag."""
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer(url: str, seconds: float = 20):
    """GET `url` of a server that is still starting: its first response, within `seconds`."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "the page never answered"
            time.sleep(0.1)


@contextmanager
def live_server(db: Path, images: Path | None) -> Iterator[str]:
    """The real app under uvicorn on a free 127.0.0.1 port, in a thread; yields its URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(db, images, ["127.0.0.1"]), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
