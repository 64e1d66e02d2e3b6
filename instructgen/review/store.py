"""The review store: one SQLite file holding the records under review and every decision.

Plain tables, readable with any SQLite tool:

- `meta(key, value)`: the fingerprint of the imported sources and the CSRF token.
- `contexts(image_id, ...)`: captions and boxes of each image (JSON columns).
- `records(seq, key, ...)`: one slim row per record or quarantined response, in source order
  (`seq`), with its task, review status, quarantine reason and a one-line snippet.
- `bodies(seq, original)`: the full source object of each row (kept out of `records` so
  that filtered scans stay small).
- `record_flags(flag, seq)` and `records_fts` (FTS5): the flag and free-text filters.
- `chair(key, hallucinated, marks)`: the objects CHAIR found absent from a record's image
  (from a chair.json, optional) and where they stand in its turns; the figures sit in `meta`.
- `decisions(key, status, reason, decided_at)`, `edits(key, turn, value, edited_at)`,
  `rescues(key, conversations, rescued_at, reason)`: the review itself, keyed by record
  (its custom_id; without one, its id and a hash of its content).

Sources are imported once; when a source file changes, records and contexts are re-imported
and the review tables, keyed by record, are kept. The source files are only read.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from instructgen.contracts import IMAGE_TOKEN, ImageContext, split_custom_id
from instructgen.errors import InputError, InstructgenError
from instructgen.files import iter_jsonl, read_json, require_file, write_json
from instructgen.review.rescue import turns_from_text

STATUSES = ("pending", "accepted", "rejected")
EXPORT_STATUSES = (*STATUSES, "all")
SNIPPET_CHARS = 160

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contexts (
  image_id INTEGER PRIMARY KEY, file_name TEXT NOT NULL, width INTEGER NOT NULL,
  height INTEGER NOT NULL, captions TEXT NOT NULL, boxes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, custom_id TEXT NOT NULL,
  image_id INTEGER, task TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  quarantine_reason TEXT, flags TEXT NOT NULL, snippet TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_task ON records (task, status, seq);
CREATE INDEX IF NOT EXISTS records_status ON records (status, seq);
CREATE INDEX IF NOT EXISTS records_quarantine ON records (quarantine_reason, seq);
CREATE TABLE IF NOT EXISTS bodies (seq INTEGER PRIMARY KEY, original TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS record_flags (
  flag TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (flag, seq)) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5 (text, content='');
CREATE TABLE IF NOT EXISTS chair (
  key TEXT PRIMARY KEY, hallucinated TEXT NOT NULL, marks TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
  key TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
  decided_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
  key TEXT NOT NULL, turn INTEGER NOT NULL, value TEXT NOT NULL, edited_at TEXT NOT NULL,
  PRIMARY KEY (key, turn));
CREATE TABLE IF NOT EXISTS rescues (
  key TEXT PRIMARY KEY, conversations TEXT NOT NULL, rescued_at TEXT NOT NULL,
  reason TEXT NOT NULL);
"""
# stores made before rescues kept their quarantine reason: take it from the records
_ADD_RESCUE_REASON = """
ALTER TABLE rescues ADD COLUMN reason TEXT NOT NULL DEFAULT '';
UPDATE rescues SET reason = coalesce(
  (SELECT quarantine_reason FROM records r WHERE r.key = rescues.key), 'unknown');
"""


class ReviewError(InstructgenError):
    """A review action the record cannot take (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class Sources:
    """The files a review reads: built records, their contexts, optionally the quarantine and
    the records' chair.json (CHAIR: hallucinated objects are marked on the page)."""

    records: Path
    contexts: Path
    quarantine: Path | None = None
    chair: Path | None = None

    def paths(self) -> list[Path]:
        files = (self.records, self.contexts, self.quarantine, self.chair)
        return [p for p in files if p is not None]

    def fingerprint(self) -> str:
        """Path, size and mtime of each file: a change in any of them triggers a re-import."""
        parts = []
        for p in self.paths():
            st = require_file(p).stat()
            parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What `import_sources` did; `imported` is False when the store was already current."""

    imported: bool
    records: int
    quarantined: int
    contexts: int
    without_context: int
    decisions_kept: int
    orphan_decisions: int


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn as shown: `value` without the image token; `edited` when a person changed it;
    `marks`: (start, end, category) of each object CHAIR found absent from the image."""

    speaker: str
    value: str
    edited: bool = False
    marks: tuple[tuple[int, int, str], ...] = ()

    def segments(self) -> list[tuple[str, str | None]]:
        """The text cut at the marks: (text, category of a hallucinated mention or None)."""
        out, at = [], 0
        for start, end, category in self.marks:
            out += [(self.value[at:start], None), (self.value[start:end], category)]
            at = end
        return [*out, (self.value[at:], None)]


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why a response did not become a record, and its raw text."""

    reason: str
    detail: str
    raw: str


@dataclass(frozen=True, slots=True)
class RecordView:
    """Everything the record page shows about one record."""

    seq: int
    key: str
    custom_id: str
    image_id: int | None
    task: str
    status: str
    reject_reason: str
    flags: tuple[str, ...]
    turns: tuple[Turn, ...]
    quarantine: Quarantine | None
    rescued: bool
    context: ImageContext | None
    image: str
    image_mode: str | None  # how the model was shown the image; None if the record does not say
    hallucinated: tuple[tuple[str, str], ...] = ()  # CHAIR: (word, category) absent from image


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def connect(db: Path) -> sqlite3.Connection:
    """A connection to an existing review database (no writes: cheap enough per request)."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    # FULL: a decision is on disk when the page says so, even after a power cut
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def open_store(db: Path) -> sqlite3.Connection:
    """Open the review database, creating its tables (WAL mode) and CSRF token if needed."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        if "reason" not in {c[1] for c in conn.execute("PRAGMA table_info(rescues)")}:
            conn.executescript(_ADD_RESCUE_REASON)
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('csrf_token', ?)", (secrets.token_urlsafe(32),)
        )
    except sqlite3.DatabaseError as e:
        raise InputError(f"{db}: not a review database ({e}); pass another --db") from None
    return conn


def csrf_token(conn: sqlite3.Connection) -> str:
    """The token every state-changing request must carry (kept in the store across restarts)."""
    return conn.execute("SELECT value FROM meta WHERE key = 'csrf_token'").fetchone()[0]


# --- import ---------------------------------------------------------------------------------


def _flag_name(flag: str) -> str:
    """`unseen_category:dog` -> `unseen_category` (the filter groups by name)."""
    return flag.split(":", 1)[0]


def _snippet(*texts: str) -> str:
    """One short line per text (question, answer start), for the list; newline-separated."""
    lines = []
    for text in texts:
        text = " ".join(text.replace(IMAGE_TOKEN, "").split())
        lines.append(text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…")
    return "\n".join(lines)


def _check_record(rec: object, where: str) -> dict:
    """A llava_instruct.json element, validated; errors name the element and the fix."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected an object, got {type(rec).__name__}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise InputError(f"{where}: no 'conversations' list; is this a llava_instruct.json?")
    for i, turn in enumerate(conv):
        if not (isinstance(turn, dict) and isinstance(turn.get("value"), str) and "from" in turn):
            raise InputError(f"{where}: turn {i} needs 'from' and a string 'value'")
    if "id" not in rec:
        raise InputError(f"{where}: no 'id' (the image id)")
    return rec


def _image_id(custom_id: str, fallback: object) -> int | None:
    parsed = split_custom_id(custom_id)
    if parsed:
        return parsed[0]
    return int(fallback) if str(fallback).isdigit() else None


def _content_key(prefix: str, content: str, taken: set[str]) -> str:
    """`prefix#<sha1 of content>`: follows its row when rows move; `~2`, `~3` on exact copies."""
    key = f"{prefix}#{hashlib.sha1(content.encode()).hexdigest()[:12]}"
    n = 1
    while (f"{key}~{n}" if n > 1 else key) in taken:
        n += 1
    return f"{key}~{n}" if n > 1 else key


def _read_records(path: Path) -> list[tuple]:
    """Rows (key, custom_id, image_id, task, quarantine_reason, flags, snippet, original, text).

    A record without a custom_id (LLaVA's public files) is keyed by its id and content, so
    that its decisions stay with it when records are inserted or removed before it.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records (llava_instruct.json)")
    rows = []
    content_keys: set[str] = set()
    for i, raw in enumerate(data):
        rec = _check_record(raw, f"{path}: record {i}")
        cid = rec.get("custom_id")
        if not cid:
            content = json.dumps([rec["id"], rec["conversations"]], sort_keys=True)
            cid = _content_key(str(rec["id"]), content, content_keys)
            content_keys.add(cid)
        cid = str(cid)
        parsed = split_custom_id(cid)
        task = str(rec.get("task") or (parsed[1] if parsed else "unknown"))
        flags = [str(f) for f in rec.get("flags") or []]
        values = [t["value"] for t in rec["conversations"]]
        text = " ".join([cid, *values]).replace(IMAGE_TOKEN, "")
        snippet = _snippet(*values[:2])
        row = (cid, cid, _image_id(cid, rec["id"]), task, None, flags, snippet)
        rows.append((*row, rec, text))
    return rows


def _read_quarantine(path: Path, taken: set[str]) -> list[tuple]:
    rows = []
    for lineno, q in iter_jsonl(path):
        where = f"{path}:{lineno}"
        missing = [k for k in ("custom_id", "reason") if not q.get(k)]
        if missing:
            raise InputError(f"{where}: quarantine line without {', '.join(missing)}")
        cid = str(q["custom_id"])
        raw = str(q.get("raw") or "")
        # a duplicate response shares its custom_id with a record: key it by its text
        key = cid if cid not in taken else _content_key(cid, raw, taken)
        parsed = split_custom_id(cid)
        task = str(q.get("task") or (parsed[1] if parsed else "unknown"))
        image_id = q.get("image_id", parsed[0] if parsed else None)
        text = " ".join([cid, str(q["reason"]), str(q.get("detail") or ""), raw])
        snippet = _snippet(str(q.get("detail") or ""), raw)
        rows.append((key, cid, image_id, task, str(q["reason"]), [], snippet, q, text))
        taken.add(key)
    return rows


def _read_contexts(path: Path) -> list[ImageContext]:
    contexts, first_line = [], {}
    for n, obj in iter_jsonl(path):
        context = ImageContext.from_json(obj, f"{path}:{n}")
        if context.image_id in first_line:
            raise InputError(
                f"{path}:{n}: image_id {context.image_id} is already on line "
                f"{first_line[context.image_id]}; keep one context per image"
            )
        first_line[context.image_id] = n
        contexts.append(context)
    return contexts


CHAIR_FLAG = "chair_hallucination"  # flag of a record naming an object absent from its image


def _read_chair(path: Path) -> tuple[dict, dict[str, tuple[list, list]]]:
    """(figures, custom_id -> (hallucinated [word, category], marks [turn, start, end, word,
    category])) from a chair.json; records without a custom_id cannot be matched and are left
    out."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise InputError(
            f"{path}: not a chair.json (no records list); write it with `instructgen chair`"
        )
    by_id = {}
    for n, rec in enumerate(data["records"]):
        try:
            cid = rec.get("custom_id")
            hallucinated = [(str(w), str(c)) for w, c in rec["hallucinated"]]
            spans = [(int(t), int(a), int(b)) for t, a, b in rec.get("spans") or []]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path}: record {n} is not a chair.json record ({e})") from None
        if cid:
            marks = [[*span, *pair] for span, pair in zip(spans, hallucinated, strict=False)]
            by_id[str(cid)] = (hallucinated, marks)
    figures = {k: data[k] for k in ("overall", "by_task", "skip_negated") if k in data}
    return figures, by_id


def import_sources(conn: sqlite3.Connection, sources: Sources) -> ImportReport:
    """Load the sources into the store once (one transaction); re-import when they change.

    Decisions, edits and rescues are keyed by record and survive a re-import.
    """
    fingerprint = sources.fingerprint()
    row = conn.execute("SELECT value FROM meta WHERE key = 'sources'").fetchone()
    if row and row[0] == fingerprint:
        return _report(conn, imported=False)
    records = _read_records(sources.records)
    keys = {r[0] for r in records}
    if len(keys) != len(records):
        seen: set[str] = set()
        dup = next(r[0] for r in records if r[0] in seen or seen.add(r[0]))
        raise InputError(f"{sources.records}: custom_id {dup} appears twice; rebuild the file")
    quarantined = _read_quarantine(sources.quarantine, keys) if sources.quarantine else []
    contexts = _read_contexts(sources.contexts)
    chair_figures, chair = _read_chair(sources.chair) if sources.chair else (None, {})
    chair = {key: v for key, v in chair.items() if key in keys}
    for row in records:
        if chair.get(row[0], ((), ()))[0]:
            categories = dict.fromkeys(c for _, c in chair[row[0]][0])
            row[5].append(f"{CHAIR_FLAG}:{','.join(categories)}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in ("contexts", "records", "bodies", "record_flags", "chair"):
            conn.execute(f"DELETE FROM {table}")
        # a contentless FTS table cannot delete rows: rebuild it
        conn.execute("DROP TABLE records_fts")
        conn.execute("CREATE VIRTUAL TABLE records_fts USING fts5 (text, content='')")
        conn.executemany(
            "INSERT INTO contexts VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    c.image_id,
                    c.file_name,
                    c.width,
                    c.height,
                    json.dumps(list(c.captions)),
                    json.dumps([b.to_json() for b in c.boxes]),
                )
                for c in contexts
            ),
        )
        rows = list(enumerate(records + quarantined, 1))
        conn.executemany(
            "INSERT INTO records (seq, key, custom_id, image_id, task, quarantine_reason, flags,"
            " snippet) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((s, *r[:5], json.dumps(r[5]), r[6]) for s, r in rows),
        )
        conn.executemany(
            "INSERT INTO bodies VALUES (?, ?)",
            ((s, json.dumps(r[7], ensure_ascii=False)) for s, r in rows),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO record_flags VALUES (?, ?)",
            ((_flag_name(f), s) for s, r in rows for f in r[5]),
        )
        conn.executemany(
            "INSERT INTO records_fts (rowid, text) VALUES (?, ?)", ((s, r[8]) for s, r in rows)
        )
        conn.executemany(
            "INSERT INTO chair VALUES (?, ?, ?)",
            ((k, json.dumps(h), json.dumps(m)) for k, (h, m) in chair.items()),
        )
        conn.execute("DELETE FROM meta WHERE key = 'chair'")
        if chair_figures is not None:
            conn.execute("INSERT INTO meta VALUES ('chair', ?)", (json.dumps(chair_figures),))
        conn.execute(
            "UPDATE records SET status = d.status FROM decisions AS d WHERE d.key = records.key"
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('sources', ?)", (fingerprint,))
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('source_paths', ?)",
            (json.dumps([str(Path(p).resolve()) for p in sources.paths()]),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return _report(conn, imported=True)


def _report(conn: sqlite3.Connection, imported: bool) -> ImportReport:
    def one(sql: str) -> int:
        return conn.execute(sql).fetchone()[0]

    return ImportReport(
        imported=imported,
        records=one("SELECT count(*) FROM records WHERE quarantine_reason IS NULL"),
        quarantined=one("SELECT count(*) FROM records WHERE quarantine_reason IS NOT NULL"),
        contexts=one("SELECT count(*) FROM contexts"),
        without_context=one(
            "SELECT count(*) FROM records r LEFT JOIN contexts c USING (image_id)"
            " WHERE c.image_id IS NULL"
        ),
        decisions_kept=one("SELECT count(*) FROM decisions d JOIN records r USING (key)"),
        orphan_decisions=one(
            "SELECT count(*) FROM decisions d LEFT JOIN records r USING (key) WHERE r.key IS NULL"
        ),
    )


# --- one record -----------------------------------------------------------------------------


def without_image_token(value: str) -> tuple[str, str]:
    """(text, where) of a first question: the token removed, `where` "before" or "after"."""
    if value.startswith(IMAGE_TOKEN + "\n"):
        return value[len(IMAGE_TOKEN) + 1 :], "before"
    if value.endswith("\n" + IMAGE_TOKEN):
        return value[: -len(IMAGE_TOKEN) - 1], "after"
    return value, ""


def with_image_token(text: str, where: str) -> str:
    """The inverse of `without_image_token`: the token put back where it was."""
    if where == "after":
        return f"{text}\n{IMAGE_TOKEN}"
    return f"{IMAGE_TOKEN}\n{text}" if where == "before" else text


@dataclass(frozen=True, slots=True)
class _Review:
    """What a person did to one record: a rescue's turns and the quarantine reason it fixed,
    and edited turn texts."""

    rescue: list[dict] | None
    rescue_reason: str
    edits: dict[int, str]


def _reviews(conn: sqlite3.Connection, key: str | None = None) -> dict[str, _Review]:
    """Rescues and edits, of one record or (key None) of all; few rows next to the records."""
    where, params = ("WHERE key = ?", [key]) if key is not None else ("", [])
    rescues = {
        k: (json.loads(conv), reason)
        for k, conv, reason in conn.execute(
            f"SELECT key, conversations, reason FROM rescues {where}", params
        )
    }
    edits: dict[str, dict[int, str]] = {}
    for k, turn, value in conn.execute(f"SELECT key, turn, value FROM edits {where}", params):
        edits.setdefault(k, {})[turn] = value
    return {
        k: _Review(*rescues.get(k, (None, "")), edits.get(k, {}))
        for k in rescues.keys() | edits.keys()
    }


def _conversation(
    original: dict, quarantined: bool, review: _Review | None
) -> tuple[list[dict] | None, set[int]]:
    """The current turns (source or rescue, with edits applied) and the edited turn indexes."""
    review = review or _Review(None, "", {})
    if review.rescue is not None:
        conv = [dict(t) for t in review.rescue]
    elif quarantined:
        return None, set()
    else:
        conv = [dict(t) for t in original["conversations"]]
    edited = {i for i in review.edits if i < len(conv)}
    for i in edited:
        where = without_image_token(conv[i]["value"])[1] if i == 0 else ""
        conv[i]["value"] = with_image_token(review.edits[i], where)
    return conv, edited


def _row(conn: sqlite3.Connection, key: str) -> sqlite3.Row:
    row = conn.execute(
        "SELECT r.*, b.original FROM records r JOIN bodies b USING (seq) WHERE r.key = ?", (key,)
    ).fetchone()
    if row is None:
        raise ReviewError(f"no record {key!r} in this review database")
    return row


def _context(conn: sqlite3.Connection, image_id: int | None) -> ImageContext | None:
    c = conn.execute("SELECT * FROM contexts WHERE image_id = ?", (image_id,)).fetchone()
    if c is None:
        return None
    obj = dict(c) | {"captions": json.loads(c["captions"]), "boxes": json.loads(c["boxes"])}
    return ImageContext.from_json(obj)


def _image_name(image_id: int | None, file_name: str | None) -> str:
    """The image file of a row with no `image` of its own: the context's, else COCO's naming."""
    if file_name:
        return file_name
    return f"{image_id:012d}.jpg" if image_id is not None else ""


def get_record(conn: sqlite3.Connection, key: str) -> RecordView:
    """The record `key` as it stands now (edits applied); ReviewError if there is none."""
    row = _row(conn, key)
    original = json.loads(row["original"])
    quarantined = row["quarantine_reason"] is not None
    review = _reviews(conn, key).get(key)
    conv, edited = _conversation(original, quarantined, review)
    chair = conn.execute("SELECT hallucinated, marks FROM chair WHERE key = ?", (key,)).fetchone()
    marks = json.loads(chair["marks"]) if chair and not quarantined else []
    texts = [
        without_image_token(t["value"])[0] if i == 0 else t["value"]
        for i, t in enumerate(conv or [])
    ]
    turns = tuple(
        Turn(t["from"], texts[i], i in edited, _marks_in(texts[i], i, marks))
        for i, t in enumerate(conv or [])
    )
    decision = conn.execute("SELECT reason FROM decisions WHERE key = ?", (key,)).fetchone()
    context = _context(conn, row["image_id"])
    image = original.get("image") if not quarantined else None
    return RecordView(
        seq=row["seq"],
        key=key,
        custom_id=row["custom_id"],
        image_id=row["image_id"],
        task=row["task"],
        status=row["status"],
        reject_reason=decision[0] if decision else "",
        flags=tuple(json.loads(row["flags"])),
        turns=turns,
        quarantine=Quarantine(
            row["quarantine_reason"],
            str(original.get("detail") or ""),
            str(original.get("raw") or ""),
        )
        if quarantined
        else None,
        rescued=bool(review and review.rescue is not None),
        context=context,
        image=str(image or _image_name(row["image_id"], context.file_name if context else None)),
        image_mode=original.get("image_mode"),
        hallucinated=tuple(tuple(p) for p in json.loads(chair["hallucinated"])) if chair else (),
    )


# CHAIR's matcher reads "teddy-bear" as "teddy bear": anything but letters parts words.
_NOT_LETTERS = re.compile(r"[^a-z'’]+")


def _marks_in(text: str, turn: int, marks: list) -> tuple[tuple[int, int, str], ...]:
    """The marks of one turn that still fit its text (an edit may have moved the words)."""
    return tuple(
        (start, end, category)
        for t, start, end, word, category in marks
        if t == turn and _NOT_LETTERS.sub(" ", text[start:end].lower()).split() == word.split()
    )


def chair_figures(conn: sqlite3.Connection) -> dict | None:
    """CHAIR of the imported records (chair.json's overall and by_task), or None without one."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'chair'").fetchone()
    return json.loads(row[0]) if row else None


# --- decisions ------------------------------------------------------------------------------


def decide(conn: sqlite3.Connection, key: str, status: str, reason: str = "") -> None:
    """Record accept / reject (a reason is required) / pending (undo), committed at once."""
    if status not in STATUSES:
        raise ReviewError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    reason = reason.strip()
    if status == "rejected" and not reason:
        raise ReviewError("a rejection needs a reason; type one (for example 'hallucination')")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = _row(conn, key)
        if status == "accepted" and row["quarantine_reason"] is not None:
            rescued = conn.execute("SELECT 1 FROM rescues WHERE key = ?", (key,)).fetchone()
            if not rescued:
                raise ReviewError(
                    f"{row['custom_id']} is quarantined ({row['quarantine_reason']}):"
                    " rescue it by editing its text into turns before accepting it"
                )
        if status == "pending":
            conn.execute("DELETE FROM decisions WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET status = excluded.status, reason = excluded.reason,"
                " decided_at = excluded.decided_at",
                (key, status, reason if status == "rejected" else "", _now()),
            )
        conn.execute("UPDATE records SET status = ? WHERE key = ?", (status, key))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _clean_turn(value: str) -> str:
    value = value.replace("\r\n", "\n").strip()
    if not value:
        raise ReviewError("a turn cannot be empty; write its text or reject the record")
    if IMAGE_TOKEN in value:
        raise ReviewError(f"remove {IMAGE_TOKEN} from the text: it is placed automatically")
    return value


def edit_turn(conn: sqlite3.Connection, key: str, turn: int, value: str) -> None:
    """Replace the text of one turn (0-based); other turns, even edited in another tab, stay."""
    value = _clean_turn(value)
    view = get_record(conn, key)
    if not 0 <= turn < len(view.turns):
        raise ReviewError(f"{view.custom_id} has no turn {turn} (it has {len(view.turns)})")
    conn.execute("INSERT OR REPLACE INTO edits VALUES (?, ?, ?, ?)", (key, turn, value, _now()))


def rescue(conn: sqlite3.Connection, key: str, text: str) -> None:
    """Turn a quarantined response into a record from `Question:` / `Answer:` text."""
    view = get_record(conn, key)
    if view.quarantine is None:
        raise ReviewError(f"{view.custom_id} is not quarantined; edit its turns instead")
    turns = turns_from_text(view.task, text)
    conv = []
    for i, (question, answer) in enumerate(turns):
        prefix = IMAGE_TOKEN + "\n" if i == 0 else ""
        conv += [
            {"from": "human", "value": prefix + _clean_turn(question)},
            {"from": "gpt", "value": _clean_turn(answer)},
        ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM edits WHERE key = ?", (key,))
        conn.execute(
            "INSERT OR REPLACE INTO rescues VALUES (?, ?, ?, ?)",
            (key, json.dumps(conv), _now(), view.quarantine.reason),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# --- export ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What `exported_records` wrote and left out."""

    written: int
    edited: int
    rescued: int
    not_rescued: int
    duplicates: int
    without_image: int


def exported_records(
    conn: sqlite3.Connection, status: str = "accepted"
) -> tuple[list[dict], ExportReport]:
    """Records with `status` ("all" for every one) in LLaVA format, edits applied, in order.

    Edited records get the flag `edited`; rescued ones `rescued:<reason>`. Quarantined
    responses never rescued have no turns and are left out (counted in `not_rescued`), so are
    rescued ones with no image id, which cannot be trained on (`without_image`).
    """
    if status not in EXPORT_STATUSES:
        raise ReviewError(f"unknown status {status!r}; use one of {', '.join(EXPORT_STATUSES)}")
    where = "1" if status == "all" else "r.status = ?"
    params = [] if status == "all" else [status]
    sql = (
        "SELECT r.key, r.custom_id, r.image_id, r.task, r.quarantine_reason, b.original,"
        f" c.file_name FROM records r JOIN bodies b USING (seq)"
        f" LEFT JOIN contexts c USING (image_id) WHERE {where} ORDER BY r.seq"
    )
    out, seen, reviews = [], set(), _reviews(conn)
    edited = rescued = not_rescued = duplicates = without_image = 0
    for r in conn.execute(sql, params):
        original = json.loads(r["original"])
        quarantined = r["quarantine_reason"] is not None
        review = reviews.get(r["key"])
        conv, edited_turns = _conversation(original, quarantined, review)
        if conv is None:
            not_rescued += 1
            continue
        if quarantined and r["image_id"] is None:
            without_image += 1
            continue
        if r["custom_id"] in seen:
            duplicates += 1
            continue
        seen.add(r["custom_id"])
        if quarantined:
            image_id = r["image_id"]
            rec = {
                "id": f"{image_id:012d}" if image_id is not None else r["custom_id"],
                "image": _image_name(image_id, r["file_name"]),
                "custom_id": r["custom_id"],
                "task": r["task"],
                "flags": [],
            }
        else:
            rec = dict(original)
        flags = list(rec.get("flags") or [])
        # a rescue outlives a rebuild that parses the response: the person accepted its turns
        if review and review.rescue is not None:
            flags.append(f"rescued:{review.rescue_reason}")
            rescued += 1
        if edited_turns:
            flags.append("edited")
            edited += 1
        out.append(rec | {"conversations": conv, "flags": flags})
    return out, ExportReport(len(out), edited, rescued, not_rescued, duplicates, without_image)


def export(db: Path, output: Path, status: str = "accepted") -> ExportReport:
    """Write the records with `status` to `output` (LLaVA JSON list, atomically)."""
    if not Path(db).is_file():
        raise InputError(
            f"{db}: no review database; start one with `instructgen review FILE --db {db}`"
        )
    conn = open_store(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'source_paths'").fetchone()
        if row and str(Path(output).resolve()) in json.loads(row[0]):
            raise InputError(f"-o {output} is a source of this review; write to another file")
        records, report = exported_records(conn, status)
    finally:
        conn.close()
    write_json(output, records)
    return report
