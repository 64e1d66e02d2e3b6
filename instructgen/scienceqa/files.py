"""ScienceQA's two layouts and the answer files, read into `Problem` records and {pid: text}.

- Official: `problems.json` ({pid: problem}) with `pid_splits.json` ({split: [pid, ...]});
  images at `images/{split}/{pid}/image.png`.
- Hugging Face parquet: the same fields, the image embedded as bytes, no pid column; ids are
  `{split}-{row}` and the images are written out as `{id}.png` (or .jpg, ...).
- Answers: answer-format lines (`question_id`, `text`, ...) or LLaVA's result JSON (`outputs`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from instructgen.errors import InputError
from instructgen.files import iter_jsonl, read_json, read_text
from instructgen.scienceqa.problems import OPTION_LETTERS, Problem, quote_pids

# Hugging Face names the validation split in full; the official splits say `val`.
SPLIT_ALIASES = {"validation": "val"}
_SPLIT_IN_NAME = re.compile(r"^(train|validation|val|test)(?=[-_.])")
_GRADE = re.compile(r"grade(\d{1,2})")
_IMAGE_KINDS = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
)
_REQUIRED_COLUMNS = ("question", "choices", "answer", "subject", "grade")
_OPTIONAL_COLUMNS = ("hint", "image", "lecture", "solution")


@dataclass(frozen=True)
class SplitProblems:
    """The problems of one split, in the split's order."""

    split: str
    problems: list[Problem]
    absent: list[str]  # pids the split lists that the problems file does not hold
    images_written: int = 0  # parquet layout: image files written (unchanged ones skipped)


def canonical_split(split: str) -> str:
    """`validation` -> `val`; other names as given."""
    return SPLIT_ALIASES.get(split, split)


def _problem(pid: str, raw: object, where: str, image: str | None) -> Problem:
    """Validate one problem's fields; `where` names the file and record in errors."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object, got {type(raw).__name__}")

    def text(field: str, required: bool = False) -> str:
        value = raw.get(field)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise InputError(f"{where}: {field!r} must be a string, got {value!r:.60}")
        return value

    choices = raw.get("choices")
    if not isinstance(choices, list | tuple) or not choices:
        raise InputError(f"{where}: 'choices' must be a non-empty list of strings")
    if len(choices) > len(OPTION_LETTERS) or not all(isinstance(c, str) for c in choices):
        raise InputError(f"{where}: 'choices' must be at most 26 strings")
    answer = raw.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise InputError(
            f"{where}: 'answer' must be a 0-based index into its {len(choices)} choices, "
            f"got {answer!r}"
        )
    grade = _GRADE.fullmatch(text("grade", required=True))
    if not grade or not 1 <= int(grade.group(1)) <= 12:
        raise InputError(f"{where}: 'grade' must be grade1 ... grade12, got {raw['grade']!r}")
    return Problem(
        pid=pid,
        question=text("question", required=True),
        choices=tuple(choices),
        answer=answer,
        hint=text("hint"),
        image=image,
        subject=text("subject", required=True),
        grade=int(grade.group(1)),
        lecture=text("lecture"),
        solution=text("solution"),
    )


# --- official layout ---


def read_official(problems_path: Path, pid_splits_path: Path, split: str) -> SplitProblems:
    """The problems of `split` from problems.json and pid_splits.json, in the split's order.

    An image path is `{problem's split}/{pid}/{image}`, relative to the official `images/`.
    """
    splits = read_json(pid_splits_path)
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise InputError(f"{pid_splits_path}: expected {{split: [pid, ...]}}")
    if split not in splits and canonical_split(split) in splits:
        split = canonical_split(split)  # `validation`, as Hugging Face names it, is `val`
    if split not in splits:
        raise InputError(
            f"{pid_splits_path}: no split {split!r}; it has {', '.join(sorted(splits))}"
        )
    raw_problems = read_json(problems_path)
    if not isinstance(raw_problems, dict):
        raise InputError(f"{problems_path}: expected {{pid: problem}}, got a JSON list or value")
    problems, absent = [], []
    for pid in map(str, splits[split]):
        raw = raw_problems.get(pid)
        if raw is None:
            absent.append(pid)
            continue
        where = f"{problems_path}: problem {pid}"
        image = raw.get("image") if isinstance(raw, dict) else None
        if image is not None and not isinstance(image, str):
            raise InputError(f"{where}: 'image' must be a file name or null, got {image!r:.60}")
        if image:
            image = f"{raw.get('split') or split}/{pid}/{image}"
        problems.append(_problem(pid, raw, where, image or None))
    return SplitProblems(split, problems, absent)


def locate_images(problems: list[Problem], images: Path) -> list[Problem]:
    """Point each image path at its file under `images`: the official `images/` folder
    (`train/4/image.png`) or one split's folder (`4/image.png`). Missing files raise
    InputError listing the pids."""
    located, missing = [], []
    for p in problems:
        if p.image is None:
            located.append(p)
            continue
        in_split = p.image.split("/", 1)[-1]
        found = next((c for c in (p.image, in_split) if (images / c).is_file()), None)
        if found is None:
            missing.append(p.pid)
        located.append(replace(p, image=found))
    if missing:
        raise InputError(
            f"{images}: {len(missing):,} image files missing for pids {quote_pids(missing)} "
            f"(looked for {images}/<split>/<pid>/image.png and {images}/<pid>/image.png)"
        )
    return located


# --- Hugging Face parquet layout ---


def _split_named(name: str) -> str | None:
    m = _SPLIT_IN_NAME.match(name)
    return canonical_split(m.group(1)) if m else None


def parquet_files(paths: list[Path], split: str) -> list[Path]:
    """The parquet files of `split`: files as given; in a folder (the dataset's own folder, or
    its `data/`), those named `{split}-*`."""
    split = canonical_split(split)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.rglob("*.parquet") if _split_named(f.name) == split)
            if not found:
                raise InputError(
                    f"{path}: no parquet file of split {split} "
                    f"(expected names such as {split}-00000-of-00001.parquet)"
                )
            files += found
        elif path.is_file():
            named = _split_named(path.name)
            if named is not None and named != split:
                raise InputError(f"{path}: its name says split {named}, not {split}")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def _open_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several kinds for a file that is not parquet
        raise InputError(f"{path}: not a readable parquet file ({e})") from None


def _image_bytes(value: object, where: str) -> bytes | None:
    """The embedded image of one row: a {bytes, path} struct, raw bytes, or null."""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            raise InputError(
                f"{where}: the image is a path ({value['path']}), not embedded bytes; "
                "use the parquet files as published, with the images inside"
            )
        return data
    if value is None or isinstance(value, bytes):
        return value
    raise InputError(f"{where}: 'image' must hold bytes, got {type(value).__name__}")


def _image_suffix(data: bytes, where: str) -> str:
    for magic, suffix in _IMAGE_KINDS:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    raise InputError(f"{where}: the image bytes are not PNG, JPEG, GIF, BMP or WebP")


def _write_image(path: Path, data: bytes) -> bool:
    """Write an image file (temp file, then rename) unless an identical one is there.

    No fsync per image (10K of them): a rerun compares the bytes and rewrites any file that
    a machine crash left short. Returns True if written.
    """
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def read_parquet(
    paths: list[Path],
    split: str,
    images_out: Path | None,
    on_rows: Callable[[int], None] | None = None,
) -> SplitProblems:
    """The problems of `split` from Hugging Face parquet files; ids are `{split}-{row}`.

    Rows count from 0 over the split's files in order. Embedded images are written to
    `images_out/{id}.png` (the suffix follows the bytes); with `images_out` None nothing is
    written (scoring needs only to know which rows have an image).
    """
    split = canonical_split(split)
    problems: list[Problem] = []
    written = 0
    row = 0
    for path in parquet_files(paths, split):
        pf = _open_parquet(path)
        names = set(pf.schema_arrow.names)
        lacking = [c for c in _REQUIRED_COLUMNS if c not in names]
        if lacking:
            raise InputError(
                f"{path}: no column {', '.join(lacking)} (ScienceQA parquet files have "
                f"{', '.join(_REQUIRED_COLUMNS + _OPTIONAL_COLUMNS)})"
            )
        columns = [c for c in _REQUIRED_COLUMNS + _OPTIONAL_COLUMNS if c in names]
        for batch in pf.iter_batches(batch_size=256, columns=columns):
            for raw in batch.to_pylist():
                pid = f"{split}-{row}"
                where = f"{path}: row {row} ({pid})"
                data = _image_bytes(raw.get("image"), where)
                image = None
                if data:
                    image = pid + _image_suffix(data, where)
                    if images_out is not None:
                        written += _write_image(images_out / image, data)
                problems.append(_problem(pid, raw, where, image))
                row += 1
            if on_rows:
                on_rows(batch.num_rows)
    return SplitProblems(split, problems, [], written)


def parquet_shape(paths: list[Path], split: str) -> tuple[int, bool]:
    """How many rows the split's parquet files hold, and whether they have an image column."""
    rows, images = 0, False
    for path in parquet_files(paths, split):
        pf = _open_parquet(path)
        rows += pf.metadata.num_rows
        images = images or "image" in pf.schema_arrow.names
    return rows, images


# --- answers ---


def read_answers(path: Path) -> dict[str, str]:
    """{pid: answer text} from answer-format lines or from LLaVA's result JSON (`outputs`).

    A question answered twice with different texts raises InputError naming both lines.
    """
    whole = read_text(path)
    try:
        doc = json.loads(whole)
    except json.JSONDecodeError:
        doc = None  # several lines: answer-format JSON Lines
    if isinstance(doc, dict) and "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, dict) or not all(isinstance(t, str) for t in outputs.values()):
            raise InputError(f"{path}: 'outputs' must map each pid to the model's text")
        return {str(pid): text for pid, text in outputs.items()}
    answers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        if "question_id" not in obj or not isinstance(obj.get("text"), str):
            raise InputError(
                f"{path}:{lineno}: an answer line needs question_id and text "
                "(or give LLaVA's result JSON, whose outputs map pids to texts)"
            )
        pid = str(obj["question_id"])
        if pid in answers and answers[pid] != obj["text"]:
            raise InputError(
                f"{path}:{lineno}: question {pid} is answered again with another text "
                f"(first at line {first_line[pid]}); keep one answer per question"
            )
        answers[pid] = obj["text"]
        first_line.setdefault(pid, lineno)
    return answers
