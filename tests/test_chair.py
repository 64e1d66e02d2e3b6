"""CHAIR: the object matcher, the three figures, chair.json, and `build`'s CHAIR figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.contracts import TASKS
from instructgen.curate.build import build
from instructgen.curate.chair import (
    ChairReport,
    ChairTally,
    find_mentions,
    ground_truth,
    read_truths,
    score_record,
)

ROOT = Path(__file__).resolve().parent.parent
QA90 = ROOT / "examples" / "llava-bench-qa90"


def named(text: str) -> list[tuple[str, str]]:
    return [(m.word, m.category) for m in find_mentions(text)]


def test_hot_dog_is_a_hot_dog_and_never_a_dog():
    assert named("A hot dog beside a dog.") == [("hot dog", "hot dog"), ("dog", "dog")]
    assert named("Two hot-dogs on a bun") == [("hot dogs", "hot dog")]


def test_teddy_bear_is_never_a_bear():
    assert named("A teddy bear and a polar bear") == [
        ("teddy bear", "teddy bear"),
        ("polar bear", "bear"),
    ]


def test_two_word_names_win_over_their_last_word():
    assert named("a traffic light, a fire hydrant, a wine glass and a cell phone") == [
        ("traffic light", "traffic light"),
        ("fire hydrant", "fire hydrant"),
        ("wine glass", "wine glass"),
        ("cell phone", "cell phone"),
    ]
    assert named("A baby elephant walks past a bus stop.") == [("baby elephant", "elephant")]


def test_plurals_and_synonyms_name_their_category():
    assert named("Three puppies, two kittens, some doughnuts and the bikes") == [
        ("puppies", "dog"),
        ("kittens", "cat"),
        ("doughnuts", "donut"),
        ("bikes", "bicycle"),
    ]
    assert named("The man's sofa and a fridge") == [
        ("man", "person"),
        ("sofa", "couch"),
        ("fridge", "refrigerator"),
    ]


def test_mention_spans_point_at_the_words_in_the_text():
    text = "Look: a Teddy  Bear!"
    (m,) = find_mentions(text)
    assert text[m.start : m.end] == "Teddy  Bear"


def test_negation_applies_within_five_words_of_the_same_clause():
    negated = {m.word: m.negated for m in find_mentions("There is no dog, but a cat sleeps.")}
    assert negated == {"dog": True, "cat": False}
    assert find_mentions("I don't see any people")[0].negated
    assert find_mentions("without any trace of a horse")[0].negated
    far = "No clouds are seen over the big green field with a horse"
    assert not find_mentions(far)[0].negated


def test_ground_truth_is_boxes_plus_objects_the_captions_name():
    truth = ground_truth(["A man eats a hot dog."], ["bench"])
    assert truth == {"bench", "person", "hot dog"}


def test_chair_counts_every_mention_and_pools_recall():
    truth = frozenset({"dog", "person"})
    text = "A dog chases a cat. The cat runs from the dog."
    record = score_record("1", "1.jpg", "detail", [(1, text)], truth)
    assert record.mentioned == (("dog", "dog"), ("cat", "cat"), ("cat", "cat"), ("dog", "dog"))
    assert record.hallucinated == (("cat", "cat"), ("cat", "cat"))
    assert [text[s:e] for _, s, e in record.spans] == ["cat", "cat"]
    clean = score_record("2", "2.jpg", "detail", [(1, "A man and his dog.")], truth)
    tally = ChairTally()
    tally.add(record)
    tally.add(clean)
    figures = tally.figures()
    assert figures["chair_i"] == pytest.approx(2 / 6, abs=1e-4)  # 2 of 4 + 0 of 2 mentions
    assert figures["chair_s"] == 0.5
    assert figures["recall"] == pytest.approx(3 / 4)  # dog of {dog, person}; both of them


def test_a_negated_mention_counts_unless_skip_negated():
    truth = frozenset({"person"})
    turns = [(1, "There is no dog in the picture, only a man.")]
    standard = score_record("1", "1.jpg", "conversation", turns, truth)
    assert standard.hallucinated == (("dog", "dog"),)
    skipping = score_record("1", "1.jpg", "conversation", turns, truth, skip_negated=True)
    assert skipping.hallucinated == ()
    assert skipping.mentioned == (("man", "person"),)
    assert skipping.negated == (("dog", "dog"),)


def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """Two contexts and a LLaVA JSON of three records with known CHAIR."""
    contexts = tmp_path / "contexts.jsonl"
    rows = [
        {"image_id": 1, "file_name": "000000000001.jpg", "width": 9, "height": 9,
         "captions": ["A hot dog on a plate."], "boxes": [{"category": "dining table",
                                                          "bbox": [0, 0, 1, 1]}]},
        {"image_id": 2, "file_name": "000000000002.jpg", "width": 9, "height": 9,
         "captions": ["A child hugs a teddy bear."], "boxes": []},
    ]  # fmt: skip
    contexts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = [
        {"id": "1", "image": "000000000001.jpg", "custom_id": "coco-1-detail", "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "A hot dog on a table; no dog is near."}]},
        {"id": "2", "image": "000000000002.jpg", "custom_id": "coco-2-conversation",
         "conversations": [
            {"from": "human", "value": "<image>\nWhat does the kid hold?"},
            {"from": "gpt", "value": "A teddy bear."},
            {"from": "human", "value": "Is there a bear?"},
            {"from": "gpt", "value": "Only the toy; there are no bears or dogs."}]},
        {"id": "3", "image": "000000000003.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "A cat."}]},
    ]  # fmt: skip
    data = tmp_path / "llava.json"
    data.write_text(json.dumps(records))
    return contexts, data


def test_chair_command_writes_chair_json_with_the_issue_layout(tmp_path):
    contexts, data = crafted(tmp_path)
    out = tmp_path / "chair.json"
    result = CliRunner().invoke(
        app, ["chair", str(data), "--contexts", str(contexts), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    chair = json.loads(out.read_text())
    assert list(chair)[:3] == ["overall", "by_task", "records"]
    keys = {"chair_i", "chair_s", "recall", "mentions", "hallucinated", "records"}
    assert keys <= set(chair["overall"])
    # record 1: hot dog, table, dog (negated, counted) -> 1 of 3; record 2: teddy bear,
    # bears, dogs -> 2 of 3; record 3 has no context: skipped and counted
    assert chair["overall"]["mentions"] == 6
    assert chair["overall"]["hallucinated"] == 3
    assert chair["overall"]["chair_i"] == 0.5
    assert chair["overall"]["chair_s"] == 1.0
    assert chair["by_task"]["detail"]["hallucinated"] == 1
    assert chair["by_task"]["conversation"]["hallucinated"] == 2
    assert chair["skipped"] == {"no_context": {"count": 1, "ids": ["3"]}}
    first = chair["records"][0]
    assert {"id", "image", "task", "hallucinated", "mentioned"} <= set(first)
    assert first["hallucinated"] == [["dog", "dog"]]
    assert first["mentioned"] == [["hot dog", "hot dog"], ["table", "dining table"], ["dog", "dog"]]
    second = chair["records"][1]
    turn, start, end = second["spans"][0]
    assert json.loads(data.read_text())[1]["conversations"][turn]["value"][start:end] == "bears"


def test_contexts_that_match_no_record_are_one_red_line_and_no_chair_json(tmp_path):
    _, data = crafted(tmp_path)
    out = tmp_path / "chair.json"
    # real contexts of other images: a wrong --contexts must not pass as a perfect score
    contexts = QA90 / "caps_boxes_coco2014_val_80.jsonl"
    result = CliRunner().invoke(
        app, ["chair", str(data), "--contexts", str(contexts), "-o", str(out)]
    )
    assert result.exit_code == 1
    assert "none of its 3 records matches" in str(result.exception)
    assert "3 no_context" in str(result.exception)
    assert not out.exists()


def test_a_cc3m_name_is_not_read_as_a_coco_image_id(tmp_path):
    contexts = tmp_path / "contexts.jsonl"
    context = {"image_id": 123, "file_name": "000000000123.jpg", "captions": ["A dog."]}
    contexts.write_text(json.dumps(context | {"boxes": []}) + "\n")
    truths = read_truths(contexts)
    assert truths.of("COCO_val2014_000000000123.jpg") == {"dog"}
    assert truths.of("GCC_train_000000123.jpg") is None


def test_skip_negated_leaves_out_the_negated_mentions(tmp_path):
    contexts, data = crafted(tmp_path)
    out = tmp_path / "chair.json"
    args = ["chair", str(data), "--contexts", str(contexts), "-o", str(out), "--skip-negated"]
    assert CliRunner().invoke(app, args).exit_code == 0
    chair = json.loads(out.read_text())
    assert chair["skip_negated"] is True
    assert chair["overall"]["mentions"] == 3  # hot dog, table, teddy bear
    assert chair["overall"]["hallucinated"] == 0
    assert chair["overall"]["chair_s"] == 0.0


def test_answers_are_scored_against_the_image_of_their_question(tmp_path):
    """Real GPT-4 answers to LLaVA's qa90 questions, against the real caps_boxes contexts."""
    out = tmp_path / "chair.json"
    args = ["chair", str(QA90 / "qa90_gpt4_answer.jsonl"), "--questions",
            str(QA90 / "qa90_questions.jsonl"), "--contexts",
            str(QA90 / "caps_boxes_coco2014_val_80.jsonl"), "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    chair = json.loads(out.read_text())
    assert chair["overall"]["records"] == 90
    assert set(chair["by_task"]) == {"conv", "detail", "complex"}
    truths = read_truths(QA90 / "caps_boxes_coco2014_val_80.jsonl")
    for record in chair["records"]:
        truth = truths.of(record["image"])
        assert all(category not in truth for _, category in record["hallucinated"])
        mentioned = {category for _, category in record["mentioned"]}
        assert {c for _, c in record["hallucinated"]} == mentioned - truth
    # GPT-4 saw the captions and boxes: it names few absent objects
    assert 0 < chair["overall"]["chair_i"] < 0.1


def test_an_answers_file_without_questions_is_one_clear_error(tmp_path):
    contexts = QA90 / "caps_boxes_coco2014_val_80.jsonl"
    answers = QA90 / "qa90_gpt4_answer.jsonl"
    args = ["chair", str(answers), "--contexts", str(contexts), "-o", str(tmp_path / "c.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "needs --questions" in str(result.exception)


def test_build_writes_chair_json_and_its_figures_into_stats(test_data, tmp_path):
    out = tmp_path / "build"
    stats = build(
        test_data / "build_responses.jsonl",
        test_data / "build_requests.jsonl",
        test_data / "build_contexts.jsonl",
        out,
    )
    chair = json.loads((out / "chair.json").read_text())
    assert stats["chair"]["overall"] == chair["overall"]
    assert stats["chair"]["overall"]["records"] == stats["records"]["total"]
    assert list(stats["chair"]["by_task"]) == list(TASKS)
    # the same figures as `instructgen chair` on the build's folder (its per-task files)
    again = tmp_path / "again.json"
    args = [
        "chair",
        str(out),
        "--contexts",
        str(test_data / "build_contexts.jsonl"),
        "-o",
        str(again),
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert json.loads(again.read_text())["by_task"] == chair["by_task"]
    records = {r["custom_id"]: r for r in chair["records"]}
    for task in TASKS:
        for rec in json.loads((out / f"{task}.json").read_text()):
            for turn, start, end in records[rec["custom_id"]]["spans"]:
                word = rec["conversations"][turn]["value"][start:end].lower()
                assert word in [w for w, _ in records[rec["custom_id"]]["hallucinated"]]


def test_stats_shows_the_chair_table(test_data, tmp_path):
    build(
        test_data / "build_responses.jsonl",
        test_data / "build_requests.jsonl",
        test_data / "build_contexts.jsonl",
        tmp_path,
    )
    result = CliRunner().invoke(app, ["stats", str(tmp_path)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "CHAIR (hallucination)" in result.output
    # at 80 columns every header and figure is whole (rich would cut them to "CHAIR_…")
    header = next(line for line in result.output.splitlines() if "CHAIR_i" in line)
    assert all(col in header for col in ("CHAIR_s", "recall", "mentions", "hallucinated"))
    assert "…" not in result.output
    assert "CHAIR_i, CHAIR_s and recall in %" in result.output


def test_report_groups_follow_the_pipeline_task_order():
    report = ChairReport()
    truth = frozenset({"dog"})
    for task in ("detail", "complex_reasoning", "conversation"):
        report.add(score_record(task, "x.jpg", task, [(1, "a dog")], truth))
    assert list(report.figures()["by_task"]) == list(TASKS)


def test_chair_over_15000_records_runs_in_seconds(tmp_path):
    """The qa90 GPT-4 answers as LLaVA records, in rotation to 15,000 (benchmarks/chair.py
    measures it; here only a generous bound, the machine may be shared)."""
    import time

    from instructgen.curate.chair import chair_of_llava

    questions = {
        q["question_id"]: q
        for q in map(json.loads, (QA90 / "qa90_questions.jsonl").read_text().splitlines())
    }
    answers = [json.loads(x) for x in (QA90 / "qa90_gpt4_answer.jsonl").read_text().splitlines()]
    records = [
        {
            "id": str(n),
            "image": questions[a["question_id"]]["image"],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe it."},
                {"from": "gpt", "value": a["text"]},
            ],
        }
        for n, a in ((n, answers[n % len(answers)]) for n in range(15_000))
    ]
    data = tmp_path / "records.json"
    data.write_text(json.dumps(records))
    start = time.perf_counter()
    report = chair_of_llava(data, read_truths(QA90 / "caps_boxes_coco2014_val_80.jsonl"))
    elapsed = time.perf_counter() - start
    assert report.overall.records == 15_000
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_a_two_word_name_never_reaches_across_a_clause_mark():
    assert named("The day was hot. Dog owners rested.") == [("dog", "dog")]


def test_the_quick_path_finds_the_same_mentions_as_find_mentions():
    """score_record counts names without spans first; on real answers it must agree."""
    truth = frozenset({"person"})
    for line in (QA90 / "qa90_gpt4_answer.jsonl").read_text().splitlines():
        text = json.loads(line)["text"]
        record = score_record("1", "x.jpg", "detail", [(1, text)], truth)
        assert record.mentioned == tuple((m.word, m.category) for m in find_mentions(text))
        absent = [(m.word, m.category) for m in find_mentions(text) if m.category not in truth]
        assert record.hallucinated == tuple(absent)
