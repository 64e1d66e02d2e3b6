"""The bundled COCO sample that `make demo` runs on: a photo for every image, each photo's
license stated."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coco-train2017-16"


def images() -> list[dict]:
    return json.loads((SAMPLE / "captions_train2017.json").read_text())["images"]


def test_the_demo_sample_has_the_photo_of_every_image_and_no_other():
    names = {image["file_name"] for image in images()}
    assert len(names) == 16
    assert {p.name for p in (SAMPLE / "train2017").iterdir()} == names
    for image in images():
        with Image.open(SAMPLE / "train2017" / image["file_name"]) as photo:
            assert photo.format == "JPEG"
            assert photo.size == (image["width"], image["height"]), image["file_name"]


def test_both_annotation_files_describe_the_same_images():
    instances = json.loads((SAMPLE / "instances_train2017.json").read_text())
    assert instances["images"] == images()


def test_the_readme_gives_each_photo_its_license_and_flickr_page():
    readme = (SAMPLE / "README.md").read_text()
    licenses = {
        entry["id"]: entry["url"]
        for entry in json.loads((SAMPLE / "captions_train2017.json").read_text())["licenses"]
    }
    for image in images():
        [row] = [line for line in readme.splitlines() if f"`{image['file_name']}`" in line]
        assert licenses[image["license"]] in row and image["flickr_url"] in row
