"""Evaluation images kept out: one parser for `coco --exclude-images` and `export --exclude`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructgen.errors import InputError
from instructgen.files import iter_jsonl
from instructgen.generate.coco import write_contexts
from instructgen.generate.exclude import image_key, listed_image_key, read_exclusions

CAPTIONS = "coco_captions_train2017_3.json"
INSTANCES = "coco_instances_train2017_3.json"


def test_the_three_spellings_of_a_coco_image_are_one_image():
    keys = {
        image_key("COCO_val2014_000000441147.jpg"),
        image_key("000000441147.jpg"),
        listed_image_key("441147"),
        image_key(441147),
        image_key("val2014/COCO_val2014_000000441147.jpg"),
    }
    assert keys == {"coco:441147"}
    assert image_key("000000441148.jpg") != listed_image_key("441147")


@pytest.mark.parametrize(
    "name", ["00044/000441147.jpg", "vg/VG_100K/2345.jpg", "gqa/images/2354786.jpg", "441147"]
)
def test_only_coco_file_names_are_coco_images_in_data(name):
    # LCS-558K, Visual Genome and GQA number their images too; only an exclusion list's bare id
    # is a COCO id
    assert image_key(name) == name


def test_a_non_coco_name_is_not_mistaken_for_a_coco_id():
    assert image_key("GCC_train_000000123.jpg") == "GCC_train_000000123.jpg"
    assert image_key("GCC_train_000000123.jpg") != image_key("123")
    # ScienceQA names every image image.png: the folder tells them apart
    assert image_key("train/1/image.png") != image_key("train/2/image.png")


def test_question_pope_and_plain_list_files_name_the_same_image(tmp_path):
    questions = tmp_path / "qa90_questions.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"question_id": n, "image": "000000441147.jpg", "text": t})
            for n, t in enumerate(["What color?", "Describe it."])
        )
        + "\n"
    )
    pope = tmp_path / "pope_random.jsonl"
    pope.write_text(
        json.dumps(
            {"question_id": 1, "image": "COCO_val2014_000000441147.jpg", "text": "Is there a dog?"}
        )
        + "\n"
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("# LLaVA-Bench images\n441147\n\n000000000139.jpg\n")
    exclusions = read_exclusions([questions, pope, ids])
    assert exclusions.coco_ids() == {441147, 139}
    assert exclusions.named == {questions: 1, pope: 1, ids: 2}
    assert exclusions.source("coco:441147") == questions  # the first file that names it


def test_a_byte_order_mark_does_not_hide_the_first_id(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("441147\n139\n", encoding="utf-8-sig")  # as Windows Notepad saves it
    assert read_exclusions([ids]).coco_ids() == {441147, 139}


def test_a_folder_given_as_an_exclusion_file_is_an_error_saying_so(tmp_path):
    with pytest.raises(InputError, match=rf"^{tmp_path}: is a folder; give a file$"):
        read_exclusions([tmp_path])


def test_a_file_naming_no_image_is_an_error(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 1, "text": "A dog."}) + "\n")
    with pytest.raises(InputError, match=r"answers.jsonl:1: names no image"):
        read_exclusions([answers])


def test_coco_exclude_images_writes_no_context_for_them(test_data, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        json.dumps({"question_id": 0, "image": "COCO_val2014_000000069468.jpg", "text": "?"}) + "\n"
    )
    out = tmp_path / "contexts.jsonl"
    summary = write_contexts(
        test_data / CAPTIONS, out, test_data / INSTANCES, exclude_paths=(questions,)
    )
    ids = [obj["image_id"] for _, obj in iter_jsonl(out)]
    assert 69468 not in ids and len(ids) == 2
    assert summary.excluded == {questions: 1}
    assert summary.images == 2  # excluded images are never read as candidates


def test_limit_counts_images_after_the_exclusion(test_data, tmp_path):
    ids = tmp_path / "ids.txt"
    all_ids = sorted(i["id"] for i in json.loads((test_data / CAPTIONS).read_text())["images"])
    ids.write_text(f"{all_ids[0]}\n")
    out = tmp_path / "contexts.jsonl"
    write_contexts(test_data / CAPTIONS, out, limit=1, exclude_paths=(ids,))
    assert [obj["image_id"] for _, obj in iter_jsonl(out)] == [all_ids[1]]


def test_coco_cli_prints_how_many_images_each_file_dropped(test_data, tmp_path):
    ids = tmp_path / "llava_bench_ids.txt"
    ids.write_text("69468\n")
    pope = tmp_path / "pope_random.jsonl"
    pope.write_text(json.dumps({"question_id": 1, "image": "COCO_val2014_000000442450.jpg"}))
    more = tmp_path / "more_ids.txt"
    more.write_text("69468\n")
    out = tmp_path / "contexts.jsonl"
    result = subprocess.run(
        [
            sys.executable, "-m", "instructgen.cli", "coco",
            "--exclude-images", str(ids), str(pope), "--captions", str(test_data / CAPTIONS),
            "-o", str(out), "--exclude-images", str(more),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"excluded 1 image named in {ids}" in result.stderr
    assert f"excluded 1 image named in {pope}" in result.stderr
    assert f"excluded 0 images named in {more}" in result.stderr  # ids named it first
    assert len(list(iter_jsonl(out))) == 1
