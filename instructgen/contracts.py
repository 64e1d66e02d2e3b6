"""The records that cross stage boundaries (DESIGN.md, "Data contracts")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from instructgen.errors import InputError

TASKS = ("conversation", "detail", "complex_reasoning")
IMAGE_TOKEN = "<image>"

_CUSTOM_ID = re.compile(r"^coco-(\d+)-(" + "|".join(TASKS) + r")$")


@dataclass(frozen=True, slots=True)
class Box:
    """One object: its COCO category name and `[x1, y1, x2, y2]` normalized to [0, 1]."""

    category: str
    bbox: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {"category": self.category, "bbox": list(self.bbox)}


@dataclass(frozen=True, slots=True)
class ImageContext:
    """What the language model is told about one image: its captions and its boxes.

    `coco_url` is where COCO serves the image (None when the annotations give none).
    """

    image_id: int
    file_name: str
    width: int
    height: int
    captions: tuple[str, ...]
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    coco_url: str | None = None

    def to_json(self) -> dict:
        obj = {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "width": self.width,
            "height": self.height,
            "captions": list(self.captions),
            "boxes": [b.to_json() for b in self.boxes],
        }
        if self.coco_url:
            obj["coco_url"] = self.coco_url
        return obj

    @classmethod
    def from_json(cls, obj: dict, where: str = "context") -> ImageContext:
        """Build from a contexts.jsonl object; `where` (file:line) names it in errors."""
        try:
            return cls(
                image_id=int(obj["image_id"]),
                file_name=str(obj["file_name"]),
                width=int(obj["width"]),
                height=int(obj["height"]),
                captions=tuple(str(c) for c in obj["captions"]),
                boxes=tuple(
                    Box(str(b["category"]), tuple(float(v) for v in b["bbox"]))
                    for b in obj.get("boxes", [])
                ),
                coco_url=str(obj["coco_url"]) if obj.get("coco_url") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: not an image context ({type(e).__name__}: {e})") from None


def custom_id(image_id: int, task: str) -> str:
    """The stable key of one request: `coco-{image_id}-{task}`."""
    return f"coco-{image_id}-{task}"


def split_custom_id(cid: str) -> tuple[int, str] | None:
    """(image_id, task) of an id made by `custom_id`, or None for any other id."""
    m = _CUSTOM_ID.match(cid)
    return (int(m.group(1)), m.group(2)) if m else None
