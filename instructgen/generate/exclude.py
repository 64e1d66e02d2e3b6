"""Evaluation images to keep out of training data, read from the files that name them.

LLaVA-Bench (COCO) asks about COCO val2014 images, most of which are in COCO train2017, the
pool `coco` generates from. `coco --exclude-images` and `export --exclude` read the evaluation
files and drop every image they name.

Accepted files:
- JSON Lines whose objects name an image by `image` (LLaVA question files, POPE files,
  answers), `file_name` or `image_id` (contexts);
- a JSON list of such objects (a LLaVA JSON);
- a plain list, one image per line (a file name or a bare id; blank lines and `#` comments
  are skipped).

A COCO image has one key whatever its spelling: `COCO_val2014_000000441147.jpg`,
`000000441147.jpg` and `000000441147` name image 441147 (COCO keeps one id per photograph
across 2014 and 2017), and so does a bare id (`441147`) in an exclusion list or an `image_id`
field. Only those two file-name forms are COCO: other numbered names (LLaVA's LCS-558K
`00044/000441147.jpg`, Visual Genome `vg/VG_100K/2345.jpg`, GQA `gqa/images/2354786.jpg`) and
any other name (a CC3M or ScienceQA file) are kept as written, folders included: ScienceQA
names every image `<split>/<pid>/image.png`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from instructgen.errors import InputError
from instructgen.files import read_text

# COCO's two file-name stems: `COCO_val2014_000000441147` (2014) and `000000441147` (2017).
_COCO_STEM = re.compile(r"(?:COCO_[a-z]+\d{4}_)?(\d{12})")
_BARE_ID = re.compile(r"\d+")
_IMAGE_FIELDS = ("image", "file_name", "image_id")


def image_key(name: str | int) -> str:
    """The key that every spelling of one image shares: `coco:441147`, or the path as written.

    A string is a COCO image only by COCO's file names; an int is a COCO image id.
    """
    if isinstance(name, int):
        return f"coco:{name}"
    path = PurePosixPath(str(name).strip().replace("\\", "/"))
    stem = path.name.rsplit(".", 1)[0] if "." in path.name else path.name
    match = _COCO_STEM.fullmatch(stem)
    return f"coco:{int(match.group(1))}" if match else str(path)


def listed_image_key(entry: str | int) -> str:
    """`image_key` of an exclusion-list entry, where a bare id (`441147`) also names COCO."""
    text = str(entry).strip()
    return f"coco:{int(text)}" if _BARE_ID.fullmatch(text) else image_key(entry)


def coco_id(key: str) -> int | None:
    """The COCO image id of a key from `image_key`, or None for a non-COCO image."""
    return int(key[5:]) if key.startswith("coco:") else None


@dataclass(frozen=True)
class Exclusions:
    """The images named by evaluation files: key -> the first file that names it."""

    sources: dict[str, Path]
    named: dict[Path, int]  # distinct images each file names

    def source(self, key: str) -> Path | None:
        """The file that excludes this image key, or None when no file names it."""
        return self.sources.get(key)

    def coco_ids(self) -> set[int]:
        """The COCO image ids among the excluded images."""
        return {i for i in map(coco_id, self.sources) if i is not None}


def read_exclusions(paths: Iterable[Path]) -> Exclusions:
    """Read every file of `paths`; a file naming no image, or a bad line, raises InputError."""
    sources: dict[str, Path] = {}
    named: dict[Path, int] = {}
    for path in map(Path, paths):
        keys = set(_names_in(path))
        if not keys:
            raise InputError(f"{path}: names no image (expected image names, ids or JSON lines)")
        named[path] = len(keys)
        for key in sorted(keys):
            sources.setdefault(key, path)
    return Exclusions(sources, named)


def _names_in(path: Path) -> Iterator[str]:
    # Windows editors save lists with a byte-order mark, which would hide the first id
    text = read_text(path).removeprefix("\ufeff")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        for n, item in enumerate(items):
            yield _image_of(item, f"{path}: item {n}")
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line
        if not entry.strip():
            continue
        if entry.lstrip().startswith("{"):
            try:
                obj = json.loads(entry)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            yield _image_of(obj, f"{path}:{lineno}")
        else:
            yield listed_image_key(entry)


def _image_of(obj: object, where: str) -> str:
    if isinstance(obj, dict):
        for field in _IMAGE_FIELDS:
            value = obj.get(field)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return listed_image_key(value) if field == "image_id" else image_key(value)
    raise InputError(f"{where}: names no image (no {', '.join(_IMAGE_FIELDS)} field)")
