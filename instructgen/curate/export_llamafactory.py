"""The LLaMA-Factory writer: sharegpt JSON, its dataset_info.json entry, and the images.

LLaMA-Factory's documented sharegpt layout with OpenAI-style tags (its data/README.md):
`OUT/<name>.json` is a list of `{"messages": [{"role": "user", "content": "<image>\\n..."},
{"role": "assistant", "content": ...}, ...], "images": ["images/<file>"]}`, and
`OUT/dataset_info.json` holds `{"<name>": {"file_name": "<name>.json", "formatting":
"sharegpt", "columns": {"messages": "messages", "images": "images"}, "tags": {"role_tag":
"role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}`.
A validation split is a second file and entry, `<name>_validation`.

Every row holds as many `<image>` tokens as images (the check LLaMA-Factory's users trip on).
Images are hard-linked under `OUT/images/` (copied where a link cannot be made, e.g. across
file systems), and rows name them relative to OUT; LLaMA-Factory joins them to its
`media_dir`, which defaults to `dataset_dir`, so `dataset_dir: OUT` finds them. An absolute
`image` path stays as written and is not copied (the join keeps an absolute path).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO

from instructgen.curate.export import TRAIN, VALIDATION, ExportRecord, ExportSummary
from instructgen.files import write_json

IMAGES_DIR = "images"
TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}


def sharegpt_row(record: ExportRecord) -> dict:
    """One sharegpt row: messages with role/content (`<image>` kept), images under OUT."""
    return {
        "messages": [{"role": m.role, "content": m.text} for m in record.messages],
        "images": [_image_name(record.image)] if record.image else [],
    }


def _image_name(image: str) -> str:
    return image if Path(image).is_absolute() else f"{IMAGES_DIR}/{image}"


def dataset_info_entry(file_name: str) -> dict:
    """The dataset_info.json entry for one sharegpt file with images."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": dict(TAGS),
    }


class LlamaFactoryWriter:
    """Writes an export as LLaMA-Factory files (see the module doc), one row at a time."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = Path(folder), name
        self.files: dict[str, IO] = {}
        self.linked: set[str] = set()
        self.image_bytes = 0

    def split_name(self, split: str) -> str:
        """The dataset name of a split: `<name>` for train, `<name>_validation` for the other."""
        return self.name if split == TRAIN else f"{self.name}_{VALIDATION}"

    def add(self, split: str, record: ExportRecord, image_path: Path | None) -> None:
        f = self.files.get(split)
        if f is None:
            f = self.files[split] = open(  # noqa: SIM115 (closed in close)
                self.folder / f"{self.split_name(split)}.json", "w", encoding="utf-8"
            )
            f.write("[\n")
        else:
            f.write(",\n")
        json.dump(sharegpt_row(record), f, ensure_ascii=False)
        absolute = record.image is not None and Path(record.image).is_absolute()
        if image_path is not None and not absolute and record.image not in self.linked:
            self._place(image_path, self.folder / IMAGES_DIR / record.image)
            self.linked.add(record.image)

    def _place(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copyfile(source, target)
        self.image_bytes += target.stat().st_size

    def finish(self, summary: ExportSummary) -> None:
        info = {}
        for split in (TRAIN, VALIDATION):
            if split in self.files:
                self.files[split].write("\n]\n")
                self.files[split].flush()
                info[self.split_name(split)] = dataset_info_entry(f"{self.split_name(split)}.json")
                summary.files.append(f"{self.split_name(split)}.json")
        write_json(self.folder / "dataset_info.json", info, indent=2)
        summary.files.append("dataset_info.json")
        summary.image_bytes = self.image_bytes
        if self.linked:
            summary.files.append(f"{IMAGES_DIR}/ ({len(self.linked)} images)")

    def close(self) -> None:
        for f in self.files.values():
            f.close()
