"""The same job through the OpenAI Batch API: upload, create, poll, download.

Half the price, results within the completion window (24 h). The journal records each
uploaded input file before its batch is created and the batch id as soon as it exists, so an
interrupted run resumes polling rather than paying twice; a batch created just before a crash
is found again by its input file. The output is the same responses.jsonl as a direct run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
from rich.console import Console

from instructgen.client.journal import FINAL_BATCH_STATES, Journal, Outcome
from instructgen.client.runner import (
    RequestLine,
    RunSummary,
    export_responses,
    load_requests,
    outcome_from_body,
    redact,
)
from instructgen.errors import InstructgenError

MAX_BATCH_REQUESTS = 50_000  # Batch API limit per batch
MAX_BATCH_BYTES = 190 * 1024 * 1024  # below the 200 MB input file limit
COMPLETION_WINDOW = "24h"


def chunks(index: list[RequestLine]) -> list[list[RequestLine]]:
    """Requests grouped by endpoint into batches within the Batch API's size limits."""
    groups: list[list[RequestLine]] = []
    by_url: dict[str, list[RequestLine]] = {}
    for req in index:
        by_url.setdefault(req.url, []).append(req)
    for reqs in by_url.values():
        current: list[RequestLine] = []
        size = 0
        for req in reqs:
            full = len(current) >= MAX_BATCH_REQUESTS or size + req.length > MAX_BATCH_BYTES
            if current and full:
                groups.append(current)
                current, size = [], 0
            current.append(req)
            size += req.length
        if current:
            groups.append(current)
    return groups


def outcome_from_line(line: dict, model_of: dict[str, str]) -> Outcome:
    """A journal Outcome from one Batch API output or error file line."""
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if line.get("error") or status != 200 or not isinstance(body, dict):
        error = line.get("error") or (body or {}).get("error") or {}
        return Outcome(
            status="failed",
            http_status=status,
            request_id=response.get("request_id"),
            line_id=line.get("id"),
            error_code=error.get("code") or f"http_{status}",
            error_message=error.get("message") or "the batch returned an error",
        )
    model = model_of.get(line["custom_id"], "")
    return outcome_from_body(body, model, 200, response.get("request_id"), line.get("id"), True)


def run_batch(
    requests_path: Path,
    output_path: Path,
    journal_path: Path,
    base_url: str | None,
    poll_interval_s: float,
    console: Console,
    key: str,
    resend_changed: bool = False,
) -> RunSummary:
    """Run the not-done requests as Batch API batches; write responses.jsonl when collected.

    Raises InstructgenError, writing no responses.jsonl, while a request has no result (its
    batch failed or expired): a rerun sends it again.
    """
    started = time.monotonic()
    index = load_requests(requests_path)
    client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=5)
    with Journal(journal_path) as journal:
        journal.sync(((r.custom_id, r.line, r.sha256) for r in index), resend_changed)
        skipped = journal.counts().done
        try:
            # todo() leaves out what open batches hold: this sends only what none holds, such
            # as the rest of a job whose upload was interrupted after its first batch
            todo = set(journal.todo())
            _submit(client, journal, requests_path, [r for r in index if r.custom_id in todo])
            _adopt_or_create(client, journal)
            _poll(client, journal, {r.custom_id: r.model for r in index}, poll_interval_s, console)
        except openai.APIError as e:
            raise InstructgenError(
                f"Batch API: {redact(str(e), key)}; rerun the same command to resume"
            ) from None
        lines = export_responses(journal, output_path)
        counts = journal.counts()
    return RunSummary(
        total=counts.total,
        done=counts.done,
        failed=counts.failed,
        sent=counts.done + counts.failed - skipped,
        skipped=skipped,
        errors={},
        finish_reasons={},
        cost_usd=counts.cost_usd,
        wall_s=time.monotonic() - started,
        output_lines=lines,
    )


def _submit(client, journal: Journal, requests_path: Path, todo: list[RequestLine]) -> None:
    """Upload each chunk of `todo` and record it in the journal before creating its batch."""
    with open(requests_path, "rb") as f:
        for chunk in chunks(todo):
            data = b""
            for req in chunk:
                f.seek(req.offset)
                data += f.read(req.length).rstrip(b"\r\n") + b"\n"
            uploaded = client.files.create(file=(requests_path.name, data), purpose="batch")
            journal.add_batch(uploaded.id, chunk[0].url, [r.custom_id for r in chunk])


def _adopt_or_create(client, journal: Journal) -> None:
    """Give every recorded input file its batch: the one already created, or a new one."""
    missing = [b for b in journal.open_batches() if b["batch_id"] is None]
    if not missing:
        return
    existing = {b.input_file_id: b for b in client.batches.list(limit=100).data}
    for rec in missing:
        batch = existing.get(rec["input_file_id"]) or client.batches.create(
            input_file_id=rec["input_file_id"],
            endpoint=rec["endpoint"],
            completion_window=COMPLETION_WINDOW,
            metadata={"created_by": "instructgen run --batch-api"},
        )
        journal.set_batch(rec["input_file_id"], batch.model_dump())


def _poll(client, journal: Journal, model_of: dict, interval_s: float, console: Console) -> None:
    """Poll open batches until each is final, then collect its output and error files."""
    while open_batches := journal.open_batches():
        for rec in open_batches:
            batch = client.batches.retrieve(rec["batch_id"])
            journal.set_batch(rec["input_file_id"], batch.model_dump())
            c = batch.request_counts
            counts = f"{c.completed:,} done, {c.failed:,} failed of {c.total:,}" if c else ""
            console.print(f"batch {batch.id}: {batch.status} {counts}", highlight=False)
            if batch.status in FINAL_BATCH_STATES:
                _collect(client, journal, rec["input_file_id"], batch, model_of, console)
        if journal.open_batches():
            time.sleep(interval_s)


def _collect(client, journal: Journal, input_file_id: str, batch, model_of, console) -> None:
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for raw in client.files.content(file_id).text.splitlines():
            if raw.strip():
                line = json.loads(raw)
                if line.get("custom_id") in model_of:
                    journal.finish(line["custom_id"], outcome_from_line(line, model_of))
    left = journal.close_batch(input_file_id, "collected")
    if left:
        reason = batch.errors.data[0].message if batch.errors and batch.errors.data else ""
        console.print(
            f"batch {batch.id} ended {batch.status} with {left:,} requests unanswered {reason}; "
            "they are pending again: rerun to send them",
            highlight=False,
        )
