"""Reading the review store for the pages: filters, keyset pages, counts, the summary.

Every list query pages on `seq` with an index (never OFFSET), so a page costs the same at
row 10 and at row 150,000; counts come from covering indexes.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass

from instructgen.review.store import STATUSES

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's filters; empty strings mean "any". `quarantine`: "", "none", "any" or a code."""

    task: str = ""
    status: str = ""
    flag: str = ""
    quarantine: str = ""
    q: str = ""

    def params(self) -> dict[str, str]:
        """The non-empty filters, for building URLs."""
        names = ("task", "status", "flag", "quarantine", "q")
        return {n: getattr(self, n) for n in names if getattr(self, n)}


@dataclass(frozen=True, slots=True)
class ListRow:
    """One line of the list."""

    seq: int
    key: str
    custom_id: str
    task: str
    status: str
    quarantine_reason: str | None
    flags: tuple[str, ...]
    snippet: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the list; `after`/`before` are the keyset cursors for next/previous."""

    rows: tuple[ListRow, ...]
    total: int
    after: int | None
    before: int | None


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts of one group (a task, a flag, a reason) by review status."""

    name: str
    total: int = 0
    accepted: int = 0
    rejected: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.accepted - self.rejected

    @property
    def acceptance(self) -> float | None:
        """Accepted / decided, 0-1; None before any decision."""
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None


@dataclass(frozen=True, slots=True)
class Summary:
    """Progress of the review: totals, and tallies per task, flag and quarantine reason."""

    overall: Tally
    quarantined: Tally
    rescued: int
    by_task: tuple[Tally, ...]
    by_flag: tuple[Tally, ...]
    by_reason: tuple[Tally, ...]
    reject_reasons: tuple[tuple[str, int], ...]


# --- list -----------------------------------------------------------------------------------


def fts_query(text: str) -> str:
    """Free text -> an FTS5 query: every word must occur (as a word prefix); no operators."""
    return " ".join(f'"{w}"*' for w in re.findall(r"\w+", text))


def _where(f: Filters) -> tuple[str, list]:
    clauses, params = [], []
    if f.task:
        clauses.append("task = ?")
        params.append(f.task)
    if f.status:
        clauses.append("status = ?")
        params.append(f.status)
    if f.flag:
        clauses.append("seq IN (SELECT seq FROM record_flags WHERE flag = ?)")
        params.append(f.flag)
    if f.quarantine == "none":
        clauses.append("quarantine_reason IS NULL")
    elif f.quarantine == "any":
        clauses.append("quarantine_reason IS NOT NULL")
    elif f.quarantine:
        clauses.append("quarantine_reason = ?")
        params.append(f.quarantine)
    if fts_query(f.q):
        clauses.append("seq IN (SELECT rowid FROM records_fts WHERE records_fts MATCH ?)")
        params.append(fts_query(f.q))
    return (" AND ".join(clauses) or "1"), params


def _list_row(r: sqlite3.Row) -> ListRow:
    return ListRow(
        r["seq"],
        r["key"],
        r["custom_id"],
        r["task"],
        r["status"],
        r["quarantine_reason"],
        tuple(json.loads(r["flags"])),
        r["snippet"],
    )


def count(conn: sqlite3.Connection, filters: Filters) -> int:
    """How many rows match the filters."""
    where, params = _where(filters)
    return conn.execute(f"SELECT count(*) FROM records WHERE {where}", params).fetchone()[0]


def list_page(
    conn: sqlite3.Connection,
    filters: Filters,
    after: int | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """One page in source order; keyset paging on `seq` (fast at any depth)."""
    where, params = _where(filters)
    cols = "seq, key, custom_id, task, status, quarantine_reason, flags, snippet"
    if before is not None:
        sql = f"SELECT {cols} FROM records WHERE {where} AND seq < ? ORDER BY seq DESC LIMIT ?"
        found = list(reversed(conn.execute(sql, [*params, before, limit + 1]).fetchall()))
        more_before, found = len(found) > limit, found[-limit:]
        more_after = bool(found)
    else:
        sql = f"SELECT {cols} FROM records WHERE {where} AND seq > ? ORDER BY seq LIMIT ?"
        found = conn.execute(sql, [*params, after or 0, limit + 1]).fetchall()
        more_after, found = len(found) > limit, found[:limit]
        more_before = after is not None and bool(found)
    rows = tuple(_list_row(r) for r in found)
    return Page(
        rows=rows,
        total=count(conn, filters),
        after=rows[-1].seq if rows and more_after else None,
        before=rows[0].seq if rows and more_before else None,
    )


def neighbour(conn: sqlite3.Connection, filters: Filters, seq: int, forward: bool) -> str | None:
    """Key of the next (or previous) row after `seq` that matches the filters."""
    where, params = _where(filters)
    op, order = (">", "ASC") if forward else ("<", "DESC")
    sql = f"SELECT key FROM records WHERE {where} AND seq {op} ? ORDER BY seq {order} LIMIT 1"
    row = conn.execute(sql, [*params, seq]).fetchone()
    return row[0] if row else None


def position(conn: sqlite3.Connection, filters: Filters, seq: int) -> int:
    """1-based position of row `seq` among the rows matching the filters."""
    where, params = _where(filters)
    sql = f"SELECT count(*) FROM records WHERE {where} AND seq <= ?"
    return conn.execute(sql, [*params, seq]).fetchone()[0]


def _task_status_counts(conn: sqlite3.Connection, quarantined: bool) -> dict[tuple[str, str], int]:
    """Row counts per (task, status), of the records or of the quarantined rows; index-only."""
    counts = dict(
        ((r[0], r[1]), r[2])
        for r in conn.execute(
            "SELECT task, status, count(*) FROM records INDEXED BY records_quarantine"
            " WHERE quarantine_reason IS NOT NULL GROUP BY 1, 2"
        )
    )
    if quarantined:
        return counts
    # all rows via the covering (task, status) index, minus the few quarantined ones
    everything = conn.execute("SELECT task, status, count(*) FROM records GROUP BY 1, 2")
    return {(r[0], r[1]): r[2] - counts.get((r[0], r[1]), 0) for r in everything}


def _sum_by(counts: dict[tuple[str, str], int], part: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in counts.items():
        out[key[part]] = out.get(key[part], 0) + n
    return out


def _tally(name: str, by_status: dict[str, int]) -> Tally:
    total = sum(by_status.values())
    return Tally(name, total, by_status.get("accepted", 0), by_status.get("rejected", 0))


def facets(conn: sqlite3.Connection) -> dict[str, list[tuple[str, int]]]:
    """Values of each filter with their counts over the whole store (records and quarantined)."""
    records = _task_status_counts(conn, quarantined=False)
    quarantined = _task_status_counts(conn, quarantined=True)
    every = {k: records.get(k, 0) + quarantined.get(k, 0) for k in records.keys() | quarantined}
    flags = conn.execute("SELECT flag, count(*) FROM record_flags GROUP BY 1 ORDER BY 1")
    reasons = conn.execute(
        "SELECT quarantine_reason, count(*) FROM records"
        " WHERE quarantine_reason IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    return {
        "task": sorted((k, n) for k, n in _sum_by(every, 0).items() if n),
        "status": [(s, _sum_by(every, 1).get(s, 0)) for s in STATUSES],
        "flag": [(r[0], r[1]) for r in flags],
        "quarantine": [(r[0], r[1]) for r in reasons],
    }


def progress(conn: sqlite3.Connection) -> Tally:
    """Decided / total over the records (quarantined responses not counted)."""
    return _tally("all records", _sum_by(_task_status_counts(conn, quarantined=False), 1))


def summary(conn: sqlite3.Connection) -> Summary:
    """Progress of the review: how much is decided, and acceptance per task, flag and reason."""
    records = _task_status_counts(conn, quarantined=False)
    quarantined = _task_status_counts(conn, quarantined=True)
    per_task = {t: n for t, n in _sum_by(records, 0).items() if n}
    tasks = sorted(per_task, key=lambda t: (-per_task[t], t))
    flags = conn.execute(
        "SELECT f.flag, count(*), sum(status = 'accepted'), sum(status = 'rejected')"
        " FROM record_flags f JOIN records USING (seq) GROUP BY 1 ORDER BY 2 DESC, 1"
    )
    reasons = conn.execute(
        "SELECT quarantine_reason, count(*), sum(status = 'accepted'), sum(status = 'rejected')"
        " FROM records WHERE quarantine_reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1"
    )
    rejections = conn.execute(
        "SELECT reason, count(*) FROM decisions WHERE status = 'rejected'"
        " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
    )
    return Summary(
        overall=_tally("all records", _sum_by(records, 1)),
        quarantined=_tally("quarantined", _sum_by(quarantined, 1)),
        rescued=conn.execute("SELECT count(*) FROM rescues JOIN records USING (key)").fetchone()[0],
        by_task=tuple(
            _tally(t, {s: n for (task, s), n in records.items() if task == t}) for t in tasks
        ),
        by_flag=tuple(Tally(*r) for r in flags),
        by_reason=tuple(Tally(*r) for r in reasons),
        reject_reasons=tuple((r[0], r[1]) for r in rejections),
    )
