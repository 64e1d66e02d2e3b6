"""LLaVA JSON -> what other trainers read: a Hugging Face dataset folder or LLaMA-Factory files.

`export` streams the records of any LLaVA-format JSON (a build, review's accepted.json,
pretrain.json, ScienceQA's converted JSON), checks each one, drops those whose image an
evaluation file names, assigns each to `train` or `validation` by its image, and hands it to
one writer: `export_hf.py` (parquet shards + dataset card) or `export_llamafactory.py`
(sharegpt JSON + dataset_info.json). Everything is written in a temp folder beside OUT and
renamed to OUT at the end, so a failure leaves no OUT at all.

A record's checks, each a red line naming the record: `conversations` alternate human and
gpt turns, starting with human and ending with a gpt turn that is not empty (LLaMA-Factory
drops a row with an odd number of turns; TRL has nothing to learn from it); a record with an
`image` holds the `<image>` token exactly once, in a human turn; a record without one holds
none; the image file exists (under --images, or at an absolute path, as LLaVA's loader
accepts).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.files import require_file
from instructgen.generate.exclude import Exclusions, image_key

FORMATS = ("hf", "llamafactory")
TRAIN, VALIDATION = "train", "validation"
ROLES = {"human": "user", "gpt": "assistant"}
READ_CHUNK = 1 << 20  # bytes of DATA decoded at a time
# A JSON error this close to the end of the buffer may be a record cut by the chunk boundary.
CUT_MARGIN = 16  # characters


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: `role` is user or assistant; `text` as written, `<image>` included."""

    role: str
    text: str


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One checked LLaVA record; `image` is its path relative to --images, None if text only."""

    id: str
    image: str | None
    messages: tuple[Message, ...]
    task: str | None = None
    image_mode: str | None = None


class RecordWriter(Protocol):
    """A format's writer: gets every kept record in order, then finishes the folder."""

    def add(self, split: str, record: ExportRecord, image_path: Path | None) -> None: ...

    def finish(self, summary: ExportSummary) -> None: ...

    def close(self) -> None:
        """Release open files and threads; called after finish, or after a failure."""


@dataclass
class ExportSummary:
    """What export read and wrote, for the card and the printed summary."""

    data: Path
    records: int = 0
    rows: Counter = field(default_factory=Counter)  # split -> rows written
    tasks: Counter = field(default_factory=Counter)  # task -> rows written
    image_modes: Counter = field(default_factory=Counter)
    excluded: dict[Path, int] = field(default_factory=dict)  # evaluation file -> records dropped
    images: int = 0  # rows with an image
    coco_images: int = 0  # rows whose image is a COCO photograph (by its name)
    image_bytes: int = 0  # bytes of image files written or linked
    files: list[str] = field(default_factory=list)  # paths under OUT


def message_parts(text: str) -> list[dict]:
    """Typed content parts of one turn: the image part where `<image>` stood, text around it.

    `"<image>\\nWhat is this?"` -> `[{"type": "image"}, {"type": "text", "text": "What is
    this?"}]`; the newline that set the token apart goes with it.
    """
    parts: list[dict] = []
    pieces = text.split(IMAGE_TOKEN)
    for n, piece in enumerate(pieces):
        if n:
            parts.append({"type": "image", "text": None})
        piece = piece.strip("\n") if len(pieces) > 1 else piece
        if piece.strip():
            parts.append({"type": "text", "text": piece})
    return parts


def check_record(obj: object, where: str) -> ExportRecord:
    """A LLaVA record -> ExportRecord; anything a trainer would trip on raises InputError."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: not a record object")
    rid = obj.get("id")
    if not isinstance(rid, str | int) or isinstance(rid, bool) or rid == "":
        raise InputError(f"{where}: no id")
    where = f"{where} (id {rid})"
    image = obj.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise InputError(f"{where}: image must be a file name, got {image!r}")
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise InputError(f"{where}: no conversations list")
    messages = []
    for n, turn in enumerate(turns):
        expected = "human" if n % 2 == 0 else "gpt"
        who = turn.get("from") if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if who != expected or not isinstance(value, str):
            raise InputError(
                f"{where}: conversations[{n}] must be a {expected} turn with a text value "
                f"(turns alternate human, gpt), got from={who!r}"
            )
        if who == "gpt" and IMAGE_TOKEN in value:
            raise InputError(f"{where}: conversations[{n}]: {IMAGE_TOKEN} in a gpt turn")
        if who == "gpt" and not value.strip():
            raise InputError(f"{where}: conversations[{n}]: an empty gpt turn (nothing to learn)")
        messages.append(Message(ROLES[who], value))
    if len(messages) % 2:
        raise InputError(
            f"{where}: ends with a human turn ({len(messages)} turns); a record must end with "
            "the gpt answer (LLaMA-Factory drops such rows, TRL has nothing to learn)"
        )
    tokens = sum(m.text.count(IMAGE_TOKEN) for m in messages)
    if tokens != (1 if image else 0):
        has = f"has image {image}" if image else "has no image"
        raise InputError(
            f"{where}: {tokens} {IMAGE_TOKEN} tokens, but the record {has}; "
            f"a record needs exactly {1 if image else 0}"
        )
    task, mode = obj.get("task"), obj.get("image_mode")
    return ExportRecord(
        str(rid),
        image,
        tuple(messages),
        task if isinstance(task, str) else None,
        mode if isinstance(mode, str) else None,
    )


def image_split(key: str, val_fraction: float, seed: int) -> str:
    """`validation` for a fraction `val_fraction` of image keys, drawn by a seeded hash.

    Every record of one image gets the same answer, so no image is on both sides; the same
    seed gives the same split on any machine.
    """
    if val_fraction <= 0:
        return TRAIN
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return VALIDATION if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else TRAIN


def iter_json_array(path: Path) -> Iterator[tuple[int, object, int]]:
    """Stream the items of a JSON list file: (index, item, bytes of the file read so far).

    Memory holds one chunk and one item, whatever the file's size.
    """
    require_file(path)
    decoder = json.JSONDecoder()
    buf, pos, line, index = "", 0, 1, 0

    def fill() -> bool:
        nonlocal buf, pos
        chunk = f.read(READ_CHUNK)
        buf = buf[pos:] + chunk
        pos = 0
        return bool(chunk)

    def skip_space() -> None:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or not fill():
                return

    def fail(what: str) -> InputError:
        return InputError(f"{path}:{line}: invalid LLaVA JSON: {what}")

    with open(path, "rb") as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8")
        try:
            skip_space()
            if pos >= len(buf) or buf[pos] != "[":
                raise fail("expected a list of records")
            pos += 1
            skip_space()
            if pos < len(buf) and buf[pos] == "]":
                return
            while True:
                while True:
                    try:
                        item, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError as e:
                        newlines = buf.count("\n", pos, e.pos)
                        # only a record running into the buffer's end may be whole with more
                        # text; anything else is broken, and reading on would load the file
                        cut = e.pos >= len(buf) - CUT_MARGIN or e.msg.startswith("Unterminated")
                        if not (cut and fill()):
                            line += newlines
                            raise fail(f"record {index}: {e.msg}") from None
                line += buf.count("\n", pos, end)
                pos = end
                yield index, item, raw.tell()
                index += 1
                skip_space()
                if pos >= len(buf):
                    raise fail("the list is not closed")
                if buf[pos] == "]":
                    return
                if buf[pos] != ",":
                    raise fail(f"expected ',' or ']' after record {index - 1}")
                pos += 1
                skip_space()
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 text ({e.reason})") from None


def check_output_folder(out: Path) -> None:
    """OUT must not exist or be an empty folder; anything else raises InputError."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder; choose a new -o folder")


def image_file(images: Path | None, image: str, where: str) -> Path:
    """The file of a record's image under --images, or at its absolute path; a missing file
    raises InputError."""
    if Path(image).is_absolute():
        if not Path(image).is_file():
            raise InputError(f"{where}: image {image} not found")
        return Path(image)
    if images is None:
        raise InputError(f"{where}: has image {image}; pass --images DIR")
    relative = PurePosixPath(image.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{where}: image {image} must be a path inside --images")
    path = images / relative
    if not path.is_file():
        raise InputError(f"{where}: image {path} not found")
    return path


def export(
    data: Path,
    out: Path,
    make_writer: Callable[[Path], RecordWriter],
    images: Path | None = None,
    exclusions: Exclusions | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Stream DATA's records into `make_writer(folder)`; the folder becomes OUT at the end.

    `on_progress(bytes read, bytes in all)` is called as DATA is read.
    """
    data, out = Path(data), Path(out)
    check_output_folder(out)
    if images is not None and not Path(images).is_dir():
        raise InputError(f"{images}: no such folder (--images)")
    total = require_file(data).stat().st_size
    summary = ExportSummary(data)
    if exclusions is not None:
        summary.excluded = dict.fromkeys(exclusions.named, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    writer = None
    try:
        writer = make_writer(folder)
        for index, obj, read in iter_json_array(data):
            summary.records += 1
            where = f"{data}: record {index}"
            record = check_record(obj, where)
            where = f"{where} (id {record.id})"
            key = image_key(record.image) if record.image else f"id:{record.id}"
            source = exclusions.source(key) if exclusions and record.image else None
            if source is not None:
                summary.excluded[source] += 1
            else:
                path = image_file(images, record.image, where) if record.image else None
                split = image_split(key, val_fraction, seed)
                writer.add(split, record, path)
                summary.rows[split] += 1
                summary.tasks[record.task or "no task field"] += 1
                if record.image_mode:
                    summary.image_modes[record.image_mode] += 1
                if path is not None:
                    summary.images += 1
                    summary.coco_images += key.startswith("coco:")
            if on_progress is not None:
                on_progress(read, total)
        if not summary.rows:
            dropped = sum(summary.excluded.values())
            why = f"all {dropped} were excluded" if dropped else "it holds no records"
            raise InputError(f"{data}: nothing to export ({why})")
        if not summary.rows[TRAIN]:
            raise InputError(
                f"--val-fraction {val_fraction}: all {summary.rows[VALIDATION]} records went to "
                "validation, leaving train empty; lower it or change --seed"
            )
        writer.finish(summary)
        writer.close()
        folder.chmod(0o777 & ~_umask())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(folder, out)
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
