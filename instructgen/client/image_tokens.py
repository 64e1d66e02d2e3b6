"""Prompt tokens of an image input, by OpenAI's published formulas; which models see images.

Two formulas are published (OpenAI, "Images and vision", calculating costs):
- tiles (GPT-4o, GPT-4.1, GPT-4.5, GPT-4 Turbo; GPT-5, o1, o3 and GPT-4o mini with their
  own constants): `low` detail costs the base tokens; `high` fits the image within 2048 x
  2048, shrinks it so that its shortest side is at most 768 px (smaller images are not
  enlarged), and costs the base tokens plus the tile tokens per 512-px tile that covers it;
- patches (GPT-4.1 mini and nano, GPT-5 mini and nano, o4-mini): 32-px patches that cover
  the image, at most 1,536 (a larger image is shrunk to fit), times a per-model multiplier;
  the detail level does not enter.
`auto` lets the provider choose, so it is counted as `high`, the most it can cost. Models with
no published constants get None (shown as `unknown`), never a guess.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

DETAILS = ("low", "high", "auto")
FIT_SIDE, SHORT_SIDE, TILE = 2048, 768, 512  # pixels
PATCH, MAX_PATCHES = 32, 1536


@dataclass(frozen=True, slots=True)
class TileRule:
    """`low`: base tokens; `high`: base + tile tokens per 512-px tile."""

    base: int
    tile: int


@dataclass(frozen=True, slots=True)
class PatchRule:
    """Tokens per 32-px patch (patches capped at 1,536)."""

    multiplier: float


# None: the model takes no image input. Dated snapshots match their family (longest prefix).
IMAGE_RULES: dict[str, TileRule | PatchRule | None] = {
    "gpt-4o": TileRule(85, 170),
    "gpt-4o-mini": TileRule(2833, 5667),
    "gpt-4.1": TileRule(85, 170),
    "gpt-4.1-mini": PatchRule(1.62),
    "gpt-4.1-nano": PatchRule(2.46),
    "gpt-4.5": TileRule(85, 170),
    "gpt-5": TileRule(70, 140),
    "gpt-5-mini": PatchRule(1.62),
    "gpt-5-nano": PatchRule(2.46),
    "o1": TileRule(75, 150),
    "o1-pro": TileRule(75, 150),
    "o3": TileRule(75, 150),
    "o4-mini": PatchRule(1.72),
    "computer-use-preview": TileRule(65, 129),
    "gpt-4-turbo": TileRule(85, 170),
    "gpt-4-vision-preview": TileRule(85, 170),
    "gpt-4-1106-vision-preview": TileRule(85, 170),
    "gpt-4": None,
    "gpt-4-32k": None,
    "gpt-4-turbo-preview": None,
    "gpt-4-1106-preview": None,
    "gpt-4-0125-preview": None,
    "gpt-3.5-turbo": None,
    "o1-mini": None,
    "o1-preview": None,
    "o3-mini": None,
}


def _rule(model: str) -> tuple[bool, TileRule | PatchRule | None]:
    """(known?, rule) for `model`, matching dated snapshots to their family."""
    if model in IMAGE_RULES:
        return True, IMAGE_RULES[model]
    family = max((n for n in IMAGE_RULES if model.startswith(n + "-")), key=len, default=None)
    return (True, IMAGE_RULES[family]) if family else (False, None)


def takes_images(model: str) -> bool | None:
    """True if `model` accepts image input, False if it is known not to, None if unknown."""
    known, rule = _rule(model)
    return (rule is not None) if known else None


def image_tokens(model: str, width: int | None, height: int | None, detail: str) -> int | None:
    """Prompt tokens of one `width` x `height` pixel image; None where nothing is published,
    or where the size is needed and not known (None): `low` detail on a tiled model is not."""
    _, rule = _rule(model)
    if isinstance(rule, TileRule) and detail == "low":
        return rule.base
    if width is None or height is None:
        return None
    if isinstance(rule, TileRule):
        return rule.base + rule.tile * tiles(width, height)
    if isinstance(rule, PatchRule):
        return round(patches(width, height) * rule.multiplier)
    return None


def _scaled(width: int, height: int, factor: float) -> tuple[int, int]:
    return round(width * factor), round(height * factor)


def tiles(width: int, height: int) -> int:
    """512-px tiles covering the image after the `high` detail resizing."""
    if max(width, height) > FIT_SIDE:
        width, height = _scaled(width, height, FIT_SIDE / max(width, height))
    if min(width, height) > SHORT_SIDE:
        width, height = _scaled(width, height, SHORT_SIDE / min(width, height))
    return math.ceil(width / TILE) * math.ceil(height / TILE)


def patches(width: int, height: int) -> int:
    """32-px patches covering the image, after shrinking it to at most 1,536 of them."""
    count = math.ceil(width / PATCH) * math.ceil(height / PATCH)
    if count <= MAX_PATCHES:
        return count
    factor = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
    # shrink a little more so that one side is a whole number of patches
    w, h = width * factor / PATCH, height * factor / PATCH
    factor *= min(math.floor(w) / w, math.floor(h) / h)
    return math.ceil(int(width * factor) / PATCH) * math.ceil(int(height * factor) / PATCH)


def image_parts(messages: list[dict]) -> Iterator[dict]:
    """The `image_url` objects of the messages' content parts."""
    for m in messages:
        content = m.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("image_url"), dict):
                yield part["image_url"]


def data_url_size(data_url: str) -> tuple[int, int] | None:
    """(width, height) in pixels of an inline image URL, or None if it is not one we can read."""
    from PIL import Image, UnidentifiedImageError

    _, sep, payload = data_url.partition(";base64,")
    if not sep:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(payload))) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def image_part_tokens(
    model: str, image: dict, linked_size: tuple[int, int] | None = None
) -> int | None:
    """Prompt tokens of one `image_url` part: an inline image measured from its data URL, a
    linked one at `linked_size` pixels (None: not known). None where no formula applies."""
    url = str(image.get("url", ""))
    size = data_url_size(url) if url.startswith("data:") else linked_size
    return image_tokens(model, *(size or (None, None)), str(image.get("detail", "auto")))


def known_image_tokens(model: str, messages: list[dict]) -> int:
    """Prompt tokens of the request's images where they can be known without a download: an
    inline image (its size is in the data URL), or `low` detail on a tiled model. A linked
    image at `high`/`auto` detail counts 0 (its size is not in the request)."""
    return sum(image_part_tokens(model, image) or 0 for image in image_parts(messages))
