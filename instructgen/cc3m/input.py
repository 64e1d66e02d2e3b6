"""Input of the CC3M filter: the Conceptual Captions TSV, or LAION / img2dataset parquet.

Either input is cut into pieces (a byte range of the TSV, a row group of a parquet file) that
know the number of their first row, so every engine reads rows, ids and bad rows the same way,
whichever piece it reads first. A row's number counts every data row before it, bad rows
included, across files in sorted order; ids without an id column are `GCC_train_{row:09d}`.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from instructgen.errors import InputError

TSV_PIECE_BYTES = 32 << 20  # bytes of TSV per piece on the Ray engine: ~300K captions

# parquet column names, in order of preference (LAION, img2dataset, our own)
CAPTION_COLUMNS = ("caption", "TEXT")
URL_COLUMNS = ("url", "URL")
ID_COLUMNS = ("key", "id")


@dataclass(frozen=True, slots=True)
class CaptionRow:
    """One image-text pair of the input; `row` is its 0-based data row, bad rows included."""

    row: int
    id: str
    caption: str
    url: str | None


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that cannot be used; it still takes its row number. `where` is
    `line N` in a TSV (1-based), `FILE row N` in parquet (0-based within the file)."""

    row: int
    where: str
    reason: str

    def describe(self) -> str:
        return f"{self.where}: {self.reason}"


def row_id(row: int) -> str:
    """The id of a row when the input has no id column."""
    return f"GCC_train_{row:09d}"


# --- TSV ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Which tab-separated column holds what; `header` when the first line names them."""

    columns: tuple[str, ...]
    header: bool

    def describe(self) -> str:
        return ", ".join(self.columns) + (" (header row)" if self.header else "")


HEADERLESS = {
    1: ("caption",),
    2: ("caption", "url"),  # the Conceptual Captions TSV
    3: ("id", "caption", "url"),
}


def detect_layout(path: Path, sample: int = 1000) -> Layout:
    """Tell the input layout from its first lines: a header naming a `caption` column, or
    1 (caption), 2 (caption, url) or 3 (id, caption, url) tab-separated fields on most lines."""
    with open(path, "rb") as f:
        lines = [_text(raw).split("\t") for raw in islice(f, sample)]
    if not lines:
        return Layout(HEADERLESS[1], header=False)
    first = [name.strip().lower() for name in lines[0]]
    if "caption" in first:
        return Layout(tuple(first), header=True)
    width, _ = Counter(len(fields) for fields in lines).most_common(1)[0]
    if width not in HEADERLESS:
        raise InputError(
            f"{path}: most lines have {width} tab-separated fields; expected 1 (caption), "
            "2 (caption, url) or 3 (id, caption, url), or a header row naming a `caption` column"
        )
    return Layout(HEADERLESS[width], header=False)


def read_rows(
    path: Path, layout: Layout, start: int = 0, stop: int | None = None, first_row: int = 0
) -> Iterator[CaptionRow | BadRow]:
    """Yield every data row of the TSV in file order (of bytes [start, stop) when given, which
    begin at data row `first_row`): a CaptionRow, or a BadRow saying why it is unusable
    (wrong column count, invalid UTF-8, empty caption, empty id). Ids never shift."""
    cols = {name: i for i, name in enumerate(layout.columns)}
    with open(path, "rb") as f:
        f.seek(start)
        if layout.header and start == 0:
            next(f, None)
        for row, raw in enumerate(_lines_until(f, stop), first_row):
            where = f"line {row + 1 + layout.header}"
            try:
                line = _text(raw, strict=True)
            except UnicodeDecodeError as e:
                yield BadRow(row, where, f"invalid UTF-8 at byte {e.start}")
                continue
            fields = line.split("\t")
            if len(fields) != len(layout.columns):
                yield BadRow(row, where, f"{len(fields)} fields, expected {len(layout.columns)}")
                continue
            url = fields[cols["url"]] if "url" in cols else None
            image_id = fields[cols["id"]] if "id" in cols else row_id(row)
            yield caption_row(row, where, fields[cols["caption"]], url, image_id)


def caption_row(
    row: int, where: str, caption: str | None, url: str | None, image_id: str | None
) -> CaptionRow | BadRow:
    """A row from its raw fields: whitespace in the caption collapsed; no caption or no id
    makes it a BadRow; an empty url is None."""
    caption = " ".join(caption.split()) if caption else ""
    if not caption:
        return BadRow(row, where, "empty caption")
    image_id = image_id.strip() if image_id else ""
    if not image_id:
        return BadRow(row, where, "empty id")
    url = str(url).strip() if url is not None else ""
    return CaptionRow(row, image_id, caption, url or None)


def _lines_until(f, stop: int | None) -> Iterator[bytes]:
    at = f.tell()
    for raw in f:
        if stop is not None and at >= stop:
            return
        at += len(raw)
        yield raw


def _text(raw: bytes, strict: bool = False) -> str:
    """One line of bytes -> text without its line ending (and without a leading UTF-8 BOM)."""
    text = raw.rstrip(b"\r\n").decode("utf-8", "strict" if strict else "replace")
    return text.removeprefix("\ufeff")


# --- pieces ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TsvPiece:
    """Bytes [start, stop) of a TSV (whole lines), beginning at data row `first_row`."""

    path: str
    layout: Layout
    start: int
    stop: int | None
    first_row: int

    def read(self) -> Iterator[CaptionRow | BadRow]:
        return read_rows(Path(self.path), self.layout, self.start, self.stop, self.first_row)


@dataclass(frozen=True, slots=True)
class ParquetPiece:
    """One row group of a parquet file, beginning at data row `first_row`; the column names
    that hold the caption, url and id (the last two may be absent)."""

    path: str
    row_group: int
    first_row: int
    file_row: int  # the row group's first row within the file
    caption: str
    url: str | None
    id: str | None

    def read(self) -> Iterator[CaptionRow | BadRow]:
        import pyarrow.parquet as pq

        names = [c for c in (self.caption, self.url, self.id) if c]
        table = pq.ParquetFile(self.path).read_row_group(self.row_group, columns=names)
        captions = table[self.caption].to_pylist()
        urls = table[self.url].to_pylist() if self.url else [None] * len(captions)
        ids = table[self.id].to_pylist() if self.id else [None] * len(captions)
        for i, (caption, url, key) in enumerate(zip(captions, urls, ids, strict=True)):
            row = self.first_row + i
            image_id = row_id(row) if not self.id else None if key is None else str(key)
            yield caption_row(row, f"{self.path} row {self.file_row + i}", caption, url, image_id)


Piece = TsvPiece | ParquetPiece


@dataclass(frozen=True)
class CaptionSource:
    """An input cut into pieces, in row order; `rows` is None when not counted (one TSV
    piece, read whole)."""

    pieces: list[Piece]
    rows: int | None
    description: str
    files: list[Path]

    def read(self) -> Iterator[CaptionRow | BadRow]:
        for piece in self.pieces:
            yield from piece.read()

    def fingerprint(self) -> list[list]:
        """What identifies the input's content: each file's path, size and modification time."""
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files]


def open_source(inputs: Sequence[Path | str], piece_bytes: int | None = None) -> CaptionSource:
    """The input named by `inputs`: one TSV / text file, or parquet files, folders (all
    `*.parquet` under them) and globs. A TSV is one piece unless `piece_bytes` is given."""
    if not inputs:
        raise InputError("no input given: name a captions TSV or parquet files")
    parquet = [p for spec in inputs for p in _parquet_files(spec)]
    if parquet:
        if len(parquet) != len(set(parquet)):
            raise InputError("a parquet file is named twice in the input: rows would repeat")
        return _parquet_source(parquet)
    if len(inputs) > 1:
        raise InputError(
            f"{len(inputs)} inputs given: name one TSV, or parquet files, folders or globs"
        )
    path = Path(inputs[0])
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    layout = detect_layout(path)
    if piece_bytes is None:
        return CaptionSource(
            [TsvPiece(str(path), layout, 0, None, 0)], None, layout.describe(), [path]
        )
    pieces, rows = _tsv_pieces(path, layout, piece_bytes)
    return CaptionSource(pieces, rows, layout.describe(), [path])


def _parquet_files(spec: Path | str) -> list[Path]:
    """The parquet files a spec names (none when it names a TSV); a folder or glob that
    names no parquet file is an error."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError(f"{path}: folder holds no *.parquet file")
        return files
    if not path.exists() and glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if p.endswith(".parquet"))
        if not files:
            raise InputError(f"{text}: the pattern matches no *.parquet file")
        return files
    return [path] if path.suffix == ".parquet" else []


def _parquet_source(files: list[Path]) -> CaptionSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pieces: list[Piece] = []
    row = 0
    columns = set()
    for path in files:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            meta = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{path}: not a readable parquet file ({e})") from None
        schema = meta.schema_arrow
        caption, url, key = (
            next((c for c in names if c in schema.names), None)
            for names in (CAPTION_COLUMNS, URL_COLUMNS, ID_COLUMNS)
        )
        if caption is None:
            raise InputError(
                f"{path}: no caption column; expected one named {' or '.join(CAPTION_COLUMNS)} "
                f"(columns: {', '.join(schema.names)})"
            )
        if not pa.types.is_string(schema.field(caption).type) and not pa.types.is_large_string(
            schema.field(caption).type
        ):
            raise InputError(
                f"{path}: column {caption!r} holds {schema.field(caption).type}, not text"
            )
        columns.add(", ".join(c for c in (caption, url, key) if c))
        file_row = 0
        for group in range(meta.num_row_groups):
            n = meta.metadata.row_group(group).num_rows
            pieces.append(ParquetPiece(str(path), group, row, file_row, caption, url, key))
            row += n
            file_row += n
    description = f"{len(files)} parquet file{'s' * (len(files) > 1)}: {'; '.join(sorted(columns))}"
    return CaptionSource(pieces, row, description, files)


def _tsv_pieces(path: Path, layout: Layout, piece_bytes: int) -> tuple[list[Piece], int]:
    """Cut a TSV into pieces of about `piece_bytes` whole lines; count the rows of each."""
    pieces: list[Piece] = []
    rows = 0
    with open(path, "rb") as f:
        if layout.header:
            f.readline()
        start = f.tell()
        while chunk := f.read(piece_bytes):
            chunk += f.readline()  # up to the end of the line the chunk stops in
            stop = start + len(chunk)
            pieces.append(TsvPiece(str(path), layout, start, stop, rows))
            rows += chunk.count(b"\n") + (not chunk.endswith(b"\n"))
            start = stop
    return pieces, rows
