"""The image a vision model sees beside a context: a URL, or a resized JPEG inlined as base64.

`url` sends the context's `coco_url` (or a base URL joined with its `file_name`); `inline`
reads `file_name` from an images folder, shrinks it so that its longest side is at most
`max_side` pixels and sends it as a `data:image/jpeg;base64,...` URL. The pixels are sent as
stored: EXIF orientation is not applied (and not sent), because COCO's boxes are measured on
the stored pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from instructgen.client.image_tokens import DETAILS, image_parts
from instructgen.contracts import ImageContext
from instructgen.errors import InputError

IMAGE_MODES = ("none", "url", "inline")
DEFAULT_MAX_SIDE = 768  # pixels: the shortest side a `high` detail image is scaled to
DEFAULT_DETAIL = "high"
JPEG_QUALITY = 90
DATA_URL_PREFIX = "data:image/jpeg;base64,"
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class ImageInput:
    """How each request shows its image: `url` or `inline`, and the detail asked for."""

    mode: str
    detail: str = DEFAULT_DETAIL
    base_url: str | None = None
    images_dir: Path | None = None
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        if self.mode not in IMAGE_MODES[1:]:
            raise InputError(f"--image must be one of {', '.join(IMAGE_MODES)}, not {self.mode!r}")
        if self.detail not in DETAILS:
            raise InputError(f"--image-detail must be one of {', '.join(DETAILS)}")
        if self.mode == "url" and self.images_dir is not None:
            raise InputError("--images is for --image inline; url mode sends addresses")
        if self.mode == "inline" and self.base_url is not None:
            raise InputError("--image-base-url is for --image url; inline mode reads --images")
        if self.mode == "inline" and self.images_dir is None:
            raise InputError("--image inline needs --images DIR (the folder of the JPEG files)")
        if self.mode == "inline" and not Path(self.images_dir).is_dir():
            raise InputError(f"{self.images_dir}: no such images folder (--images)")
        if self.max_side < 1:
            raise InputError("--image-max-side must be at least 1 pixel")

    def check(self, contexts: Iterable[ImageContext], where: str) -> None:
        """Raise InputError listing every context whose image cannot be sent (before any work)."""
        if self.mode == "url" and self.base_url is None:
            missing = [c.image_id for c in contexts if not c.coco_url]
            if missing:
                raise InputError(
                    f"{where}: no coco_url for image ids {_ids(missing)}; pass --image-base-url "
                    "URL (joined with each file_name), or write the contexts again with `coco`"
                )
        elif self.mode == "inline":
            missing = [c.image_id for c in contexts if not self.path(c).is_file()]
            if missing:
                raise InputError(
                    f"{self.images_dir}: no image file for image ids {_ids(missing)} "
                    "(looked for each context's file_name there)"
                )

    def path(self, context: ImageContext) -> Path:
        return Path(self.images_dir) / context.file_name

    def url(self, context: ImageContext) -> str:
        """What goes in the request's image_url: a web address or a data URL."""
        if self.mode == "inline":
            return DATA_URL_PREFIX + base64.b64encode(
                inline_jpeg(self.path(context), self.max_side, context.image_id)
            ).decode("ascii")
        if self.base_url is not None:
            return f"{self.base_url.rstrip('/')}/{quote(context.file_name)}"
        return str(context.coco_url)

    def part(self, context: ImageContext) -> dict:
        """The `image_url` content part of the request for `context`."""
        return {"type": "image_url", "image_url": {"url": self.url(context), "detail": self.detail}}


def image_mode(messages: list[dict]) -> str:
    """`inline` (a data URL), `url`, or `none` (text only): how a request shows its image."""
    for image in image_parts(messages):
        return "inline" if str(image.get("url", "")).startswith("data:") else "url"
    return "none"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def inline_jpeg(path: Path, max_side: int, image_id: int | str) -> bytes:
    """JPEG bytes of the image at `path`, its longest side at most `max_side` pixels.

    Every image is decoded, so that a cut-off download is caught here. A JPEG already small
    enough, in RGB or grey, with no EXIF rotation is then sent as it is; anything else is
    shrunk and encoded again. Raises InputError naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            plain = (
                img.format == "JPEG"
                and img.mode in ("RGB", "L")
                and max(img.size) <= max_side
                and img.getexif().get(EXIF_ORIENTATION, 1) == 1
            )
            img.load()  # decode it all: a truncated or corrupt file fails here, not at the API
            if plain:
                return Path(path).read_bytes()
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable image (image {image_id}): {e}") from None
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard on pixel counts
        raise InputError(
            f"{path}: too large to decode safely (image {image_id}): {e}; shrink it first"
        ) from None
