"""The SQLite journal of a run: one row per custom_id, the source of truth for resume.

Plain tables with readable columns, so `sqlite3 journal.sqlite 'select status, count(*) from
requests group by 1'` answers "where are we". WAL mode; each state change is its own
transaction, so a response is stored and marked done in one commit, and a process killed at
any moment (even `kill -9`) leaves every row either done with its response or not done.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from instructgen.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    custom_id         TEXT PRIMARY KEY,
    line              INTEGER,          -- line in the current requests file; NULL if not in it
    request_sha256    TEXT NOT NULL,    -- hash of the request line as sent
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_flight', 'done', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,             -- kind: message of the latest failed attempt
    http_status       INTEGER,
    finish_reason     TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cached_tokens     INTEGER,
    cost_usd          REAL,             -- NULL when the model has no known price
    request_id        TEXT,             -- the server's x-request-id
    response_line_id  TEXT,             -- `id` of the responses.jsonl line
    response_body     TEXT,             -- the chat.completion JSON as returned
    error_code        TEXT,             -- final failure only
    error_message     TEXT,
    batch_input_file  TEXT,             -- input_file_id of the Batch API batch holding it
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_line ON requests (line);
CREATE TABLE IF NOT EXISTS batches (
    input_file_id   TEXT PRIMARY KEY,   -- uploaded before the batch exists: a crash in between
    batch_id        TEXT UNIQUE,        -- is recovered by finding the batch by its input file
    endpoint        TEXT NOT NULL,
    request_count   INTEGER NOT NULL,
    status          TEXT NOT NULL,      -- uploaded, then the Batch API's status
    output_file_id  TEXT,
    error_file_id   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
"""
FINAL_BATCH_STATES = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended: `done` (a 200 with its body) or `failed` (an error)."""

    status: str
    http_status: int | None = None
    body: dict | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None
    request_id: str | None = None
    line_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class JournalCounts:
    """Where the requests of the current input stand, and what they cost so far."""

    total: int
    done: int
    failed: int
    pending: int
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """One SQLite file per job. Open with `Journal(path)`; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a killed process; only an OS crash may lose the last ones
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path}: not a usable journal ({e}); use another path") from None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def sync(self, requests: Iterable[tuple[str, int, str]], resend_changed: bool) -> int:
        """Make the journal match the input: (custom_id, line, sha256) per request.

        New ids start pending; rows left in flight by a killed run become pending again (unless
        a Batch API batch holds them). A request changed while a batch holds it is refused; a
        done request whose hash changed is refused unless `resend_changed`, which sends it
        again. Returns the number of changed requests reset.
        """
        known = {
            cid: (sha, status, batch)
            for cid, sha, status, batch in self.db.execute(
                "SELECT custom_id, request_sha256, status, batch_input_file FROM requests"
            )
        }
        inserts, moves, resets, conflicts, held = [], [], [], [], []
        now = _now()
        for cid, line, sha in requests:
            if cid not in known:
                inserts.append((cid, line, sha, now, now))
            elif known[cid][0] == sha:
                moves.append((line, cid))
            elif known[cid][2] is not None:
                held.append(cid)
            elif known[cid][1] == "done" and not resend_changed:
                conflicts.append(cid)
            else:
                resets.append((line, sha, now, cid))
        if held:
            # the batch would answer the old request: its result must not land on the new one
            raise InputError(
                f"{self.path}: {len(held)} request(s) changed while a Batch API batch holds "
                f"them (first: {', '.join(held[:3])}); rerun `run --batch-api` with the "
                "requests file as it was to collect the batch, then change the requests"
            )
        if conflicts:
            raise InputError(
                f"{self.path}: {len(conflicts)} request(s) already done have changed in the "
                f"requests file (first: {', '.join(conflicts[:3])}); use a new --journal for the "
                "new requests, or pass --resend-changed to send them again (billed again)"
            )
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE requests SET line = NULL")
            self.db.executemany(
                "INSERT INTO requests (custom_id, line, request_sha256, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                inserts,
            )
            self.db.executemany("UPDATE requests SET line = ? WHERE custom_id = ?", moves)
            self.db.executemany(
                "UPDATE requests SET line = ?, request_sha256 = ?, status = 'pending', "
                "response_body = NULL, finish_reason = NULL, http_status = NULL, "
                "error_code = NULL, error_message = NULL, updated_at = ? WHERE custom_id = ?",
                resets,
            )
            self.db.execute(
                "UPDATE requests SET status = 'pending' "
                "WHERE status = 'in_flight' AND batch_input_file IS NULL"
            )
        return len(resets)

    def todo(self) -> list[str]:
        """Custom ids of the input not done and not held by a batch, in file order."""
        rows = self.db.execute(
            "SELECT custom_id FROM requests WHERE line IS NOT NULL AND status != 'done' "
            "AND batch_input_file IS NULL ORDER BY line"
        )
        return [cid for (cid,) in rows]

    def unfinished(self) -> list[str]:
        """Custom ids of the input still pending or in flight, in file order."""
        rows = self.db.execute(
            "SELECT custom_id FROM requests WHERE line IS NOT NULL "
            "AND status IN ('pending', 'in_flight') ORDER BY line"
        )
        return [cid for (cid,) in rows]

    def start_attempt(self, cid: str) -> None:
        """Mark `cid` as in flight, counting one more attempt."""
        self.db.execute(
            "UPDATE requests SET status = 'in_flight', attempts = attempts + 1, updated_at = ? "
            "WHERE custom_id = ?",
            (_now(), cid),
        )

    def release(self, cid: str) -> None:
        """Put `cid` back to pending when in flight: its run stopped before it had a result."""
        self.db.execute(
            "UPDATE requests SET status = 'pending', updated_at = ? "
            "WHERE custom_id = ? AND status = 'in_flight'",
            (_now(), cid),
        )

    def note_error(self, cid: str, error: str) -> None:
        """Record the error of an attempt that will be retried."""
        self.db.execute(
            "UPDATE requests SET last_error = ?, updated_at = ? WHERE custom_id = ?",
            (error, _now(), cid),
        )

    def finish(self, cid: str, outcome: Outcome) -> None:
        """Store how `cid` ended, in one commit: the response and the status together."""
        now = _now()
        body = json.dumps(outcome.body, ensure_ascii=False) if outcome.body is not None else None
        self.db.execute(
            "UPDATE requests SET status = ?, http_status = ?, response_body = ?, "
            "finish_reason = ?, prompt_tokens = ?, completion_tokens = ?, cached_tokens = ?, "
            "cost_usd = ?, request_id = ?, response_line_id = ?, error_code = ?, "
            "error_message = ?, last_error = COALESCE(?, last_error), batch_input_file = NULL, "
            "updated_at = ?, finished_at = ? WHERE custom_id = ?",
            (
                outcome.status,
                outcome.http_status,
                body,
                outcome.finish_reason,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.cached_tokens,
                outcome.cost_usd,
                outcome.request_id,
                outcome.line_id,
                outcome.error_code,
                outcome.error_message,
                f"{outcome.error_code}: {outcome.error_message}" if outcome.error_code else None,
                now,
                now,
                cid,
            ),
        )

    def counts(self) -> JournalCounts:
        """Totals over the current input's requests."""
        row = self.db.execute(
            "SELECT count(*), sum(status = 'done'), sum(status = 'failed'), "
            "coalesce(sum(cost_usd), 0), coalesce(sum(prompt_tokens), 0), "
            "coalesce(sum(completion_tokens), 0) FROM requests WHERE line IS NOT NULL"
        ).fetchone()
        total, done, failed = row[0], row[1] or 0, row[2] or 0
        return JournalCounts(total, done, failed, total - done - failed, row[3], row[4], row[5])

    def finished_rows(self) -> Iterator[sqlite3.Row]:
        """The current input's done and failed rows in file order (streamed)."""
        cursor = self.db.cursor()
        cursor.row_factory = sqlite3.Row
        yield from cursor.execute(
            "SELECT custom_id, status, http_status, request_id, response_line_id, response_body, "
            "error_code, error_message FROM requests "
            "WHERE line IS NOT NULL AND status IN ('done', 'failed') ORDER BY line"
        )

    # --- Batch API ---

    def add_batch(self, input_file_id: str, endpoint: str, cids: list[str]) -> None:
        """Record an uploaded input file and hand its requests to it, before the batch exists."""
        now = _now()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO batches (input_file_id, endpoint, request_count, status, "
                "created_at, updated_at) VALUES (?, ?, ?, 'uploaded', ?, ?)",
                (input_file_id, endpoint, len(cids), now, now),
            )
            self.db.executemany(
                "UPDATE requests SET status = 'in_flight', batch_input_file = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE custom_id = ?",
                [(input_file_id, now, cid) for cid in cids],
            )

    def set_batch(self, input_file_id: str, batch: dict) -> None:
        """Store a batch's id, status and result files as last seen."""
        self.db.execute(
            "UPDATE batches SET batch_id = ?, status = ?, output_file_id = ?, error_file_id = ?, "
            "updated_at = ? WHERE input_file_id = ?",
            (
                batch["id"],
                batch["status"],
                batch.get("output_file_id"),
                batch.get("error_file_id"),
                _now(),
                input_file_id,
            ),
        )

    def open_batches(self) -> list[dict]:
        """Batches whose results are not yet in the journal, as dicts of their columns."""
        cursor = self.db.cursor()
        cursor.row_factory = sqlite3.Row
        rows = cursor.execute(
            "SELECT input_file_id, batch_id, endpoint, status FROM batches "
            "WHERE status != 'collected' ORDER BY created_at"
        )
        return [dict(r) for r in rows]

    def close_batch(self, input_file_id: str, status: str) -> int:
        """Mark a batch collected; its requests without a result go back to pending."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "UPDATE batches SET status = ?, updated_at = ? WHERE input_file_id = ?",
                (status, _now(), input_file_id),
            )
            cursor = self.db.execute(
                "UPDATE requests SET status = 'pending', batch_input_file = NULL, updated_at = ? "
                "WHERE batch_input_file = ?",
                (_now(), input_file_id),
            )
        return cursor.rowcount
