"""POPE: build on real COCO train2017 annotations (examples/coco-train2017-80), and score."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.errors import InputError
from instructgen.eval.pope import (
    SPLITS,
    PopeQuestion,
    build_pope,
    question_text,
    read_pope_images,
    read_pope_questions,
    says_no,
    score_pope,
    split_file,
)
from instructgen.generate.coco import write_contexts

ROOT = Path(__file__).resolve().parent.parent
COCO = ROOT / "examples" / "coco-train2017-80"
N_IMAGES = 30


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pope") / "contexts.jsonl"
    write_contexts(
        COCO / "captions_train2017.json", path, COCO / "instances_train2017.json", None, None
    )
    return path


@pytest.fixture(scope="module")
def built(contexts, tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("pope_out")
    args = ["pope", "build", "--contexts", str(contexts), "--images", str(N_IMAGES)]
    result = CliRunner().invoke(app, [*args, "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return {
        s: [json.loads(line) for line in (out / split_file(s)).read_text().splitlines()]
        for s in SPLITS
    }


@pytest.fixture(scope="module")
def coco_objects() -> dict[str, set[str]]:
    """file name -> categories boxed in it (non-crowd), read straight from the COCO file."""
    instances = json.loads((COCO / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    files = {im["id"]: im["file_name"] for im in instances["images"]}
    objects: dict[str, set[str]] = {f: set() for f in files.values()}
    for a in instances["annotations"]:
        if not a["iscrowd"]:
            objects[files[a["image_id"]]].add(names[a["category_id"]])
    return objects


def test_each_split_has_three_yes_and_three_no_per_image_alternating(built):
    for split, lines in built.items():
        assert len(lines) == 6 * N_IMAGES
        per_image = Counter(line["image"] for line in lines)
        assert len(per_image) == N_IMAGES and set(per_image.values()) == {6}
        assert [line["label"] for line in lines] == ["yes", "no"] * (3 * N_IMAGES)
        assert {line["category"] for line in lines} == {split}
    ids = [line["question_id"] for lines in built.values() for line in lines]
    assert len(set(ids)) == len(ids)  # one answers file can hold all three splits


def test_lines_are_llava_questions_with_the_right_article(built):
    line = built["random"][0]
    assert {"question_id", "image", "text", "category", "label"} <= set(line)
    for lines in built.values():
        for line in lines:
            assert line["text"] == question_text(line["object"])
    assert question_text("apple") == "Is there an apple in the image?"
    assert question_text("umbrella") == "Is there an umbrella in the image?"
    assert question_text("dog") == "Is there a dog in the image?"


def test_yes_objects_are_boxed_and_no_objects_are_neither_boxed_nor_in_captions(
    built, coco_objects
):
    captions = json.loads((COCO / "captions_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in captions["images"]}
    text: dict[str, str] = {}
    for a in captions["annotations"]:
        text[files[a["image_id"]]] = text.get(files[a["image_id"]], "") + a["caption"].lower()
    for lines in built.values():
        for line in lines:
            boxed = coco_objects[line["image"]]
            if line["label"] == "yes":
                assert line["object"] in boxed
            else:
                assert line["object"] not in boxed
                assert not re.search(rf"\b{line['object']}s?\b", text[line["image"]])
    assert all(len(coco_objects[line["image"]]) >= 3 for line in built["random"])


def test_every_split_asks_the_same_yes_questions(built):
    def yes(split: str) -> list[tuple[str, str]]:
        return [(q["image"], q["object"]) for q in built[split] if q["label"] == "yes"]

    assert yes("random") == yes("popular") == yes("adversarial")


def test_random_negatives_come_from_the_objects_of_the_sampled_images(built, coco_objects):
    sampled = {line["image"] for line in built["random"]}
    pool = set().union(*(coco_objects[f] for f in sampled))
    assert {q["object"] for q in built["random"] if q["label"] == "no"} <= pool


def test_popular_negatives_are_the_most_frequent_absent_objects(built, contexts, coco_objects):
    frequency = Counter(c for objects in coco_objects.values() for c in objects)
    shown = {im.file_name: im.shown for im in read_pope_images(contexts)}
    by_image: dict[str, list[str]] = {}
    for q in built["popular"]:
        if q["label"] == "no":
            by_image.setdefault(q["image"], []).append(q["object"])
    for image, negatives in by_image.items():
        left_out = [c for c in frequency if c not in shown[image] and c not in negatives]
        assert min(frequency[c] for c in negatives) >= max(frequency[c] for c in left_out)
    assert "person" in {o for negatives in by_image.values() for o in negatives}


def test_adversarial_negatives_co_occur_most_with_the_image_objects(built, contexts, coco_objects):
    shown = {im.file_name: im.shown for im in read_pope_images(contexts)}

    def together(image: str, candidate: str) -> int:
        own = coco_objects[image]
        return sum(
            len(objects & own - {candidate})
            for objects in coco_objects.values()
            if candidate in objects
        )

    by_image: dict[str, list[str]] = {}
    for q in built["adversarial"]:
        if q["label"] == "no":
            by_image.setdefault(q["image"], []).append(q["object"])
    for image, negatives in by_image.items():
        scores = {
            c: together(image, c) for c in {o for objs in coco_objects.values() for o in objs}
        }
        left_out = [c for c in scores if c not in shown[image] and c not in negatives]
        assert all(scores[c] > 0 for c in negatives)
        assert min(scores[c] for c in negatives) >= max(scores[c] for c in left_out)
    # adversarial differs from popular: the image's own company decides
    popular = [q["object"] for q in built["popular"] if q["label"] == "no"]
    adversarial = [q["object"] for q in built["adversarial"] if q["label"] == "no"]
    assert popular != adversarial


def test_the_same_seed_gives_the_same_questions(contexts):
    images = read_pope_images(contexts)
    assert build_pope(images, 10, seed=5) == build_pope(images, 10, seed=5)
    assert build_pope(images, 10, seed=5) != build_pope(images, 10, seed=6)


def test_more_images_than_qualify_is_an_input_error(contexts):
    images = read_pope_images(contexts)
    eligible = sum(len(im.boxed) >= 3 for im in images)
    with pytest.raises(InputError, match=f"only {eligible} images"):
        build_pope(images, eligible + 1, seed=0)


def test_llava_yes_no_rule():
    assert says_no("No, there is no dog.")
    assert says_no("There is not a dog in the image.")
    assert says_no("no")
    assert says_no("Yes, no doubt about it")  # LLaVA's rule, as it is
    assert not says_no("Yes. No other animal is there.")  # only before the first period
    assert not says_no("NO")  # case-sensitive, as LLaVA's
    assert not says_no("Nothing like that")
    assert says_no("No.There is a dog")


def hand_made(tmp_path: Path) -> tuple[Path, Path]:
    """Six random and four popular questions; answers shuffled, one missing."""
    labels = {"random": ["yes", "no", "yes", "no", "yes", "no"], "popular": ["yes", "no"] * 2}
    answers_by_id = {
        # random: TP, TN, FN, FP, TP, (missing)
        1: "Yes, there is.", 2: "No.", 3: "There is no such object.", 4: "Yes", 5: "yes",
        # popular: TP, FP, TP, FP: a model that says yes to everything
        7: "Yes", 8: "Yes, I think so", 9: "Yes", 10: "It is there.",
    }  # fmt: skip
    qdir = tmp_path / "pope"
    qdir.mkdir()
    qid = 1
    for split, split_labels in labels.items():
        with open(qdir / split_file(split), "w") as f:
            for label in split_labels:
                line = {"question_id": qid, "image": "x.jpg", "text": "?", "category": split}
                f.write(json.dumps(line | {"label": label}) + "\n")
                qid += 1
    rows = list(answers_by_id.items())
    random.Random(0).shuffle(rows)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"question_id": q, "prompt": "?", "text": t}) + "\n" for q, t in rows)
    )
    return qdir, answers


def test_score_matches_hand_computed_confusion_matrices(tmp_path):
    qdir, answers = hand_made(tmp_path)
    out = tmp_path / "result.json"
    args = ["pope", "score", "--questions", str(qdir), "--answers", str(answers), "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    rnd = r["splits"]["random"]
    assert (rnd["tp"], rnd["tn"], rnd["fp"], rnd["fn"]) == (2, 1, 1, 1)
    assert rnd["n"] == 5 and rnd["missing"] == 1
    assert rnd["accuracy"] == 0.6
    assert rnd["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert rnd["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert rnd["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert rnd["yes_ratio"] == 0.6
    pop = r["splits"]["popular"]
    assert (pop["tp"], pop["fp"], pop["yes_ratio"], pop["precision"]) == (2, 2, 1.0, 0.5)
    assert pop["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["missing"] == [6]
    assert r["average"]["accuracy"] == pytest.approx((0.6 + 0.5) / 2)
    assert r["published"] == {"LLaVA-1.5-7B F1 (published)": 85.9}
    assert set(r) >= {"splits", "average", "missing", "published"}
    assert (tmp_path / "result.png").stat().st_size > 10_000


def test_score_reads_one_file_and_splits_by_category(tmp_path):
    qdir, answers = hand_made(tmp_path)
    both = tmp_path / "both.jsonl"
    both.write_text(
        (qdir / "pope_random.jsonl").read_text() + (qdir / "pope_popular.jsonl").read_text()
    )
    out = tmp_path / "r.json"
    args = ["pope", "score", "--questions", str(both), "--answers", str(answers), "-o", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert list(json.loads(out.read_text())["splits"]) == ["random", "popular"]


def test_a_split_with_no_answers_has_null_figures_and_is_left_out_of_the_average(tmp_path):
    qdir, answers = hand_made(tmp_path)
    line = {"question_id": 99, "image": "x.jpg", "text": "?", "category": "adversarial"}
    (qdir / split_file("adversarial")).write_text(json.dumps(line | {"label": "no"}) + "\n")
    out = tmp_path / "result.json"
    args = ["pope", "score", "--questions", str(qdir), "--answers", str(answers), "-o", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    adversarial = r["splits"]["adversarial"]
    assert (adversarial["n"], adversarial["missing"], adversarial["f1"]) == (0, 1, None)
    assert r["average"]["splits"] == ["random", "popular"]
    assert r["average"]["accuracy"] == pytest.approx((0.6 + 0.5) / 2)
    assert "adversarial: no answers; left out of the average" in result.output
    # at 80 columns the headers and the figures are whole
    header = next(line for line in result.output.splitlines() if "precision" in line)
    assert all(col in header for col in ("accuracy", "precision", "recall", "F1", "yes ratio"))
    average = next(line for line in result.output.splitlines() if "average" in line)
    assert [c.strip() for c in average.split("│")[3:8]] == ["55.0", "58.3", "83.3", "66.7", "80.0"]


def test_f1_comes_from_the_unrounded_precision_and_recall():
    # tp 1, fn 5: precision 1, recall 1/6; rounding recall first would give 0.2858
    questions = [PopeQuestion(n, "random", True) for n in range(6)]
    result = score_pope(questions, {0: "Yes"} | {n: "No" for n in range(1, 6)})
    assert result["splits"]["random"]["f1"] == round(2 / 7, 4) == 0.2857


def test_official_pope_files_take_the_split_from_their_name(tmp_path):
    for first, split in ((1, "random"), (3, "popular")):
        lines = [
            {"question_id": n, "image": "COCO_val2014_000000310196.jpg", "text": "?", "label": a}
            for n, a in ((first, "yes"), (first + 1, "no"))
        ]
        path = tmp_path / f"coco_pope_{split}.json"  # JSON Lines, named .json, no category
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    one = read_pope_questions(tmp_path / "coco_pope_popular.json")
    assert [(q.question_id, q.split, q.label) for q in one] == [
        (3, "popular", True),
        (4, "popular", False),
    ]
    assert [q.split for q in read_pope_questions(tmp_path)] == ["popular"] * 2 + ["random"] * 2


def test_a_line_with_no_category_in_a_file_naming_no_split_is_an_error(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"question_id": 1, "image": "x.jpg", "label": "yes"}) + "\n")
    with pytest.raises(InputError, match=r"questions.jsonl:1: question 1 has no category, and"):
        read_pope_questions(path)


def test_a_missing_answer_is_never_a_yes():
    questions = [PopeQuestion(1, "random", True), PopeQuestion(2, "random", False)]
    result = score_pope(questions, {2: "no"})
    assert result["splits"]["random"]["tp"] == 0
    assert result["splits"]["random"]["n"] == 1
    assert result["missing"] == [1]


def test_answer_reads_the_question_files_as_they_are(contexts, tmp_path):
    from instructgen.eval.pope import write_pope
    from instructgen.eval.records import read_questions

    write_pope(contexts, 5, 0, tmp_path)
    questions = read_questions(tmp_path / split_file("adversarial"))
    assert len(questions) == 30
    assert {q.category for q in questions} == {"adversarial"}
    assert all(q.image and q.text.startswith("Is there a") for q in questions)


def test_answers_to_other_questions_are_counted_and_ignored(tmp_path):
    qdir, answers = hand_made(tmp_path)
    out = tmp_path / "r.json"
    random_only = qdir / "pope_random.jsonl"
    args = ["pope", "score", "--questions", str(random_only), "--answers", str(answers)]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 answers to questions not in" in result.output
    assert list(json.loads(out.read_text())["splits"]) == ["random"]
