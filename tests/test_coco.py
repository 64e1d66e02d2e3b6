"""`instructgen coco`: real COCO annotations -> image contexts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instructgen.errors import InputError
from instructgen.files import iter_jsonl
from instructgen.generate.coco import normalize_box, write_contexts

CAPTIONS = "coco_captions_train2017_3.json"
INSTANCES = "coco_instances_train2017_3.json"


def contexts_of(path: Path) -> dict[int, dict]:
    return {obj["image_id"]: obj for _, obj in iter_jsonl(path)}


def test_boxes_are_normalized_to_image_size(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    write_contexts(test_data / CAPTIONS, out, test_data / INSTANCES)
    ctx = contexts_of(out)[69468]  # 427 x 640 kitchen scene
    dog = next(b for b in ctx["boxes"] if b["category"] == "dog")
    instances = json.loads((test_data / INSTANCES).read_text())
    ann = next(
        a for a in instances["annotations"] if a["image_id"] == 69468 and a["category_id"] == 18
    )
    x, y, w, h = ann["bbox"]
    assert dog["bbox"] == [
        round(x / 427, 3),
        round(y / 640, 3),
        round((x + w) / 427, 3),
        round(min(y + h, 640) / 640, 3),
    ]
    assert all(0.0 <= v <= 1.0 for b in ctx["boxes"] for v in b["bbox"])


def test_every_caption_of_an_image_is_kept(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    write_contexts(test_data / CAPTIONS, out, test_data / INSTANCES)
    captions = json.loads((test_data / CAPTIONS).read_text())["annotations"]
    expected = sorted(" ".join(a["caption"].split()) for a in captions if a["image_id"] == 442450)
    assert sorted(contexts_of(out)[442450]["captions"]) == expected


def test_crowd_annotations_are_dropped_and_counted(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    summary = write_contexts(test_data / CAPTIONS, out, test_data / INSTANCES)
    instances = json.loads((test_data / INSTANCES).read_text())["annotations"]
    crowd = sum(a["iscrowd"] for a in instances)
    assert crowd >= 1 and summary.crowd_dropped == crowd
    assert summary.boxes == len(instances) - crowd


def test_boxes_are_listed_largest_first(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    write_contexts(test_data / CAPTIONS, out, test_data / INSTANCES)
    for ctx in contexts_of(out).values():
        areas = [
            (b["bbox"][2] - b["bbox"][0]) * (b["bbox"][3] - b["bbox"][1]) for b in ctx["boxes"]
        ]
        assert areas == sorted(areas, reverse=True)


def test_out_of_image_box_is_clipped_and_empty_box_dropped():
    assert normalize_box([600, 400, 100, 100], 640, 480) == ((0.938, 0.833, 1.0, 1.0), True)
    assert normalize_box([10, 10, 0, 50], 640, 480) == (None, False)
    assert normalize_box([700, 10, 50, 50], 640, 480) == (None, True)
    assert normalize_box([0, 0, 640, 480], 640, 480) == ((0.0, 0.0, 1.0, 1.0), False)


def test_images_without_captions_are_reported_not_written(test_data, tmp_path):
    captions = json.loads((test_data / CAPTIONS).read_text())
    captions["images"].append({"id": 1, "file_name": "000000000001.jpg", "width": 10, "height": 10})
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(captions))
    out = tmp_path / "contexts.jsonl"
    summary = write_contexts(src, out)
    assert summary.no_captions == [1]
    assert 1 not in contexts_of(out) and summary.contexts == 3


def test_limit_and_image_ids_select_images(test_data, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("442450\n# a comment\n69468\n")
    out = tmp_path / "contexts.jsonl"
    write_contexts(test_data / CAPTIONS, out, image_ids_path=ids, limit=1)
    assert list(contexts_of(out)) == [442450]


def test_caption_for_unknown_image_is_an_error_naming_it(test_data, tmp_path):
    captions = json.loads((test_data / CAPTIONS).read_text())
    captions["annotations"].append({"id": 999, "image_id": 4242, "caption": "A ghost."})
    src = tmp_path / "captions.json"
    src.write_text(json.dumps(captions))
    with pytest.raises(InputError, match="caption 999 refers to unknown image id 4242"):
        write_contexts(src, tmp_path / "out.jsonl")


def test_instances_without_categories_is_an_error(test_data, tmp_path):
    instances = json.loads((test_data / INSTANCES).read_text())
    del instances["categories"]
    src = tmp_path / "instances.json"
    src.write_text(json.dumps(instances))
    with pytest.raises(InputError, match="no 'categories'"):
        write_contexts(test_data / CAPTIONS, tmp_path / "out.jsonl", src)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instructgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_malformed_json_gives_one_line_with_position_and_no_output(tmp_path):
    bad = tmp_path / "captions.json"
    bad.write_text('{"images": [\n  {"id": 1,,}\n]}')
    out = tmp_path / "contexts.jsonl"
    result = run_cli("coco", "--captions", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr and "invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_missing_file_is_one_red_line(tmp_path):
    result = run_cli(
        "coco", "--captions", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o.jsonl")
    )
    assert result.returncode == 1 and "nope.json: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_prints_a_summary_with_every_count(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    result = run_cli(
        "coco",
        "--captions",
        str(test_data / CAPTIONS),
        "--instances",
        str(test_data / INSTANCES),
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for word in ("3 contexts", "crowd", "zero-area", "clipped"):
        assert word in result.stderr
    assert len(out.read_text().splitlines()) == 3


def test_a_real_sample_gives_one_context_per_image_with_every_caption_and_box(test_data, tmp_path):
    """Four COCO train2017 images: 20 captions, 68 instances of which one is crowd."""
    ann = test_data / "coco_train2017" / "annotations"
    out = tmp_path / "contexts.jsonl"
    summary = write_contexts(ann / "captions_train2017.json", out, ann / "instances_train2017.json")
    assert summary.contexts == 4 and summary.captions == 20
    assert (
        summary.crowd_dropped == 1
        and summary.boxes + summary.crowd_dropped + summary.zero_area_dropped == 68
    )


def test_box_thinner_than_the_output_precision_is_dropped():
    assert normalize_box([100, 50, 0.1, 30], 640, 480) == (None, False)


def test_annotation_missing_a_field_is_an_error_naming_it(test_data, tmp_path):
    instances = json.loads((test_data / INSTANCES).read_text())
    del instances["annotations"][2]["bbox"]
    src = tmp_path / "instances.json"
    src.write_text(json.dumps(instances))
    with pytest.raises(InputError, match=r"annotations\[2\] has no 'bbox'"):
        write_contexts(test_data / CAPTIONS, tmp_path / "out.jsonl", src)


def test_instances_file_given_as_captions_says_so(test_data, tmp_path):
    with pytest.raises(InputError, match="is this an instances file"):
        write_contexts(test_data / INSTANCES, tmp_path / "out.jsonl")


def test_a_folder_in_the_way_of_the_output_is_one_line_not_a_traceback(test_data, tmp_path):
    out = tmp_path / "contexts.jsonl"
    out.mkdir()
    result = run_cli("coco", "--captions", str(test_data / CAPTIONS), "-o", str(out))
    assert result.returncode == 1 and "Is a directory" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
