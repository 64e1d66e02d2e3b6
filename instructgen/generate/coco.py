"""COCO annotations -> ImageContext lines (contexts.jsonl): captions plus normalized boxes.

Each context keeps the image's `coco_url` when the annotations give one, so that `render
--image url` can show the model the photograph.

The box rule, applied to every instance annotation:
- crowd annotations (`iscrowd` = 1) are dropped: they outline a group, not one object, and
  would make object counts wrong;
- boxes reaching outside the image are clipped to it (counted as `clipped`);
- boxes with no area left (zero width or height after clipping, or after rounding to the
  3 decimals of the output) are dropped;
- boxes are listed largest first, so the most salient objects lead the context.
Images without captions get no context; they are counted and their first ids are reported.
Images named by an evaluation file (`exclude.py`) get no context either, so no request and no
money is spent on them; they are counted per file.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from instructgen.contracts import Box, ImageContext
from instructgen.errors import InputError
from instructgen.files import atomic_writer, read_json, require_file
from instructgen.generate.exclude import Exclusions, image_key, read_exclusions

BOX_DECIMALS = 3


@dataclass
class CocoSummary:
    """What `coco` read and wrote, for the printed summary."""

    images: int = 0
    contexts: int = 0
    captions: int = 0
    boxes: int = 0
    crowd_dropped: int = 0
    zero_area_dropped: int = 0
    clipped: int = 0
    no_captions: list[int] = field(default_factory=list)
    excluded: dict[Path, int] = field(default_factory=dict)  # evaluation file -> images dropped


def normalize_box(
    bbox_xywh: list[float], width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, bool]:
    """COCO `[x, y, w, h]` in pixels -> (`[x1, y1, x2, y2]` in 0..1 or None if empty, clipped?)."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    x1, y1, x2, y2 = x, y, x + w, y + h
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    clipped = (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        return None, clipped
    norm = (
        round(cx1 / width, BOX_DECIMALS),
        round(cy1 / height, BOX_DECIMALS),
        round(cx2 / width, BOX_DECIMALS),
        round(cy2 / height, BOX_DECIMALS),
    )
    if norm[2] <= norm[0] or norm[3] <= norm[1]:  # thinner than the 3-decimal grid
        return None, clipped
    return norm, clipped


IMAGE_KEYS = ("id", "file_name", "width", "height")
CAPTION_KEYS = ("id", "image_id", "caption")
INSTANCE_KEYS = ("id", "image_id", "category_id", "bbox")


def _load_coco(path: Path, need: tuple[str, ...], annotation_keys: tuple[str, ...]):
    """Load an annotation file with pycocotools, after our own checks give clear errors."""
    from pycocotools.coco import COCO

    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a COCO annotation file (top level is not an object)")
    for key in need:
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: not a COCO annotation file: no '{key}' list")
    _check_keys(path, "images", data["images"], IMAGE_KEYS)
    _check_keys(path, "annotations", data["annotations"], annotation_keys)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_keys(path: Path, section: str, items: list, keys: tuple[str, ...]) -> None:
    for i, item in enumerate(items):
        missing = [k for k in keys if not isinstance(item, dict) or k not in item]
        if missing:
            hint = (
                " (is this an instances file? pass it as --instances)"
                if "caption" in missing
                else ""
            )
            raise InputError(f"{path}: {section}[{i}] has no '{missing[0]}'{hint}")


def read_image_ids(path: Path) -> list[int]:
    """Image ids, one per line (blank lines and `#` comments ignored)."""
    require_file(path)
    ids = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise InputError(f"{path}:{lineno}: not an image id: {text!r}") from None
    return ids


def iter_contexts(
    captions_path: Path,
    instances_path: Path | None = None,
    limit: int | None = None,
    image_ids: list[int] | None = None,
    summary: CocoSummary | None = None,
    exclusions: Exclusions | None = None,
) -> Iterator[ImageContext]:
    """Yield one ImageContext per selected image that has captions, in image-id order.

    Images named in `exclusions` are skipped before `limit` applies, and counted per file.
    """
    summary = summary if summary is not None else CocoSummary()
    caps = _load_coco(Path(captions_path), ("images", "annotations"), CAPTION_KEYS)
    for ann in caps.dataset["annotations"]:
        if not isinstance(ann["caption"], str):
            raise InputError(f"{captions_path}: caption {ann['id']} is not text")
        if ann["image_id"] not in caps.imgs:
            raise InputError(
                f"{captions_path}: caption {ann.get('id')} refers to unknown image id "
                f"{ann.get('image_id')}"
            )
    boxes_by_image: dict[int, list] = defaultdict(list)
    categories: dict[int, str] = {}
    if instances_path is not None:
        inst = _load_coco(
            Path(instances_path), ("images", "annotations", "categories"), INSTANCE_KEYS
        )
        categories = {c["id"]: c["name"] for c in inst.dataset["categories"]}
        for ann in inst.dataset["annotations"]:
            if ann.get("category_id") not in categories:
                raise InputError(
                    f"{instances_path}: annotation {ann.get('id')} has unknown category id "
                    f"{ann.get('category_id')}"
                )
            boxes_by_image[ann["image_id"]].append(ann)

    if image_ids is None:
        selected = sorted(caps.imgs)
    else:
        unknown = [i for i in image_ids if i not in caps.imgs]
        if unknown:
            raise InputError(
                f"{captions_path}: image ids not in this file: {', '.join(map(str, unknown[:5]))}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        selected = list(dict.fromkeys(image_ids))
    if exclusions is not None:
        excluded = exclusions.coco_ids()
        summary.excluded = dict.fromkeys(exclusions.named, 0)
        for image_id in selected:
            if image_id in excluded:
                summary.excluded[exclusions.source(image_key(image_id))] += 1
        selected = [i for i in selected if i not in excluded]
    if limit is not None:
        selected = selected[:limit]

    for image_id in selected:
        img = caps.imgs[image_id]
        summary.images += 1
        captions = tuple(" ".join(a["caption"].split()) for a in caps.imgToAnns.get(image_id, []))
        captions = tuple(c for c in captions if c)
        if not captions:
            summary.no_captions.append(image_id)
            continue
        width, height = int(img["width"]), int(img["height"])
        boxes = []
        for ann in boxes_by_image.get(image_id, []):
            if ann.get("iscrowd", 0):
                summary.crowd_dropped += 1
                continue
            norm, clipped = normalize_box(ann["bbox"], width, height)
            if norm is None:
                summary.zero_area_dropped += 1
                continue
            summary.clipped += clipped
            boxes.append(Box(categories[ann["category_id"]], norm))
        boxes.sort(key=lambda b: (b.bbox[2] - b.bbox[0]) * (b.bbox[3] - b.bbox[1]), reverse=True)
        summary.contexts += 1
        summary.captions += len(captions)
        summary.boxes += len(boxes)
        coco_url = img.get("coco_url") or None
        yield ImageContext(
            image_id, img["file_name"], width, height, captions, tuple(boxes), coco_url
        )


def write_contexts(
    captions_path: Path,
    output: Path,
    instances_path: Path | None = None,
    limit: int | None = None,
    image_ids_path: Path | None = None,
    exclude_paths: tuple[Path, ...] = (),
) -> CocoSummary:
    """Write contexts.jsonl atomically, streaming one line per image; return the counts.

    `exclude_paths`: evaluation files whose images get no context (see `exclude.py`).
    """
    summary = CocoSummary()
    image_ids = read_image_ids(image_ids_path) if image_ids_path else None
    exclusions = read_exclusions(exclude_paths) if exclude_paths else None
    contexts = iter_contexts(captions_path, instances_path, limit, image_ids, summary, exclusions)
    with atomic_writer(output) as f:
        for ctx in contexts:
            f.write(json.dumps(ctx.to_json(), ensure_ascii=False))
            f.write("\n")
    return summary
