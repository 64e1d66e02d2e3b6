"""ScienceQA, pure parts: format codes, records, answer extraction, scoring and breakdown."""

from __future__ import annotations

import pytest

from instructgen.contracts import IMAGE_TOKEN
from instructgen.errors import InputError
from instructgen.scienceqa.problems import (
    GROUPS,
    LETTER_INSTRUCTION,
    Problem,
    breakdown_table,
    extract_choice,
    gpt_turn,
    human_turn,
    llava_record,
    parse_format,
    question_line,
    score_answers,
)


def problem(**fields) -> Problem:
    base = dict(
        pid="7",
        question="Which material is this spoon made of?",
        choices=("wood", "metal", "glass"),
        answer=1,
        hint="",
        image=None,
        subject="natural science",
        grade=3,
        lecture="A material is a type of matter.",
        solution="Look at the spoon: it is shiny and hard.",
    )
    return Problem(**{**base, **fields})


# --- format codes ---


def test_input_letters_are_lines_in_the_order_written():
    p = problem(hint="Look at the picture.")
    assert human_turn(p, parse_format("QCM-A")).splitlines()[:3] == [
        "Question: Which material is this spoon made of?",
        "Context: Look at the picture.",
        "Options: (A) wood (B) metal (C) glass",
    ]
    assert human_turn(p, parse_format("CQM-A")).splitlines()[0] == "Context: Look at the picture."


def test_an_empty_hint_is_context_na():
    assert "Context: N/A" in human_turn(problem(hint="  "), parse_format("QCM-LEA")).splitlines()


def test_reasoning_first_ends_with_the_answer_sentence():
    assert gpt_turn(problem(), parse_format("QCM-LEA")).splitlines() == [
        "A material is a type of matter.",
        "Look at the spoon: it is shiny and hard.",
        "The answer is B.",
    ]


def test_answer_first_starts_with_the_answer_sentence():
    assert gpt_turn(problem(), parse_format("QCM-ALE")).splitlines()[0] == "The answer is B."
    assert gpt_turn(problem(), parse_format("QCM-AE")).splitlines() == [
        "The answer is B.",
        "Look at the spoon: it is shiny and hard.",
    ]


def test_only_answer_only_formats_ask_for_the_letter():
    for code in ("QCM-A", "CQM-A"):
        assert human_turn(problem(), parse_format(code)).endswith(LETTER_INSTRUCTION)
        assert gpt_turn(problem(), parse_format(code)) == "The answer is B."
    for code in ("QCM-LEA", "QCM-ALE", "QCM-AE"):
        assert LETTER_INSTRUCTION not in human_turn(problem(), parse_format(code))


def test_an_empty_lecture_or_solution_is_left_out():
    assert gpt_turn(problem(lecture=""), parse_format("QCM-LEA")).splitlines() == [
        "Look at the spoon: it is shiny and hard.",
        "The answer is B.",
    ]
    assert gpt_turn(problem(solution=" "), parse_format("QCM-ALE")).splitlines() == [
        "The answer is B.",
        "A material is a type of matter.",
    ]


def test_any_combination_of_the_letters_works():
    fmt = parse_format("mq-ea")
    assert fmt.code == "MQ-EA"
    assert human_turn(problem(), fmt).splitlines()[0].startswith("Options: (A) wood")
    assert gpt_turn(problem(), fmt).endswith("hard.\nThe answer is B.")


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("QCX-A", "unknown input letter 'X'"),
        ("QCM-LEX", "unknown output letter 'X'"),
        ("QCM", "expected <input>-<output>"),
        ("QCM-", "expected <input>-<output>"),
        ("QQM-A", "an input letter is repeated"),
    ],
)
def test_a_bad_format_code_is_a_clear_error(code, says):
    with pytest.raises(InputError, match=says):
        parse_format(code)


# --- records and questions ---


def test_an_image_question_has_its_path_and_the_image_token_once():
    record = llava_record(problem(image="train/7/image.png"), parse_format("QCM-LEA"))
    assert record["id"] == "7"
    assert record["image"] == "train/7/image.png"
    human, gpt = record["conversations"]
    assert (human["from"], gpt["from"]) == ("human", "gpt")
    assert human["value"].count(IMAGE_TOKEN) == 1
    assert IMAGE_TOKEN not in gpt["value"]


def test_a_text_question_has_neither_image_nor_token():
    record = llava_record(problem(), parse_format("QCM-LEA"))
    assert "image" not in record
    assert IMAGE_TOKEN not in record["conversations"][0]["value"]


def test_a_format_that_leaves_the_answer_empty_gives_no_record():
    assert llava_record(problem(lecture=""), parse_format("QCM-L")) is None


def test_a_question_line_is_the_human_turn_without_the_image_token():
    fmt = parse_format("CQM-A")
    line = question_line(problem(image="test/7/image.png"), fmt)
    assert line == {
        "question_id": "7",
        "image": "test/7/image.png",
        "text": human_turn(problem(), fmt),
        "category": "scienceqa",
    }
    assert "image" not in question_line(problem(), fmt)


# --- extraction ---


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("B", 1),
        ("  C\n", 2),
        ("A. wood", 0),
        ("C.", 2),
        ("LECTURE: ...\nSOLUTION: ...\nThe answer is B.", 1),
        ("A. The answer is B.", 0),  # rule 2 comes before rule 3
        ("The answer is C. Because glass is clear.", 2),
        ("The answer is A. No wait, the answer is B.", 0),  # one sentence: `the` is lower case
    ],
)
def test_extraction_rules_read_the_chosen_option(text, index):
    assert extract_choice(text, 3).index == index


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The answer is A. Or: The answer is B.", "several_matches"),
        ("The answer is A.\nThe answer is A.", "several_matches"),
        ("The answer is E.", "beyond_options"),
        ("E", "beyond_options"),
        ("metal", "no_match"),
        ("The answer is (B).", "no_match"),
        ("b", "no_match"),
        ("", "no_match"),
    ],
)
def test_anything_else_is_unparsed_with_its_reason(text, reason):
    got = extract_choice(text, 3)
    assert (got.index, got.reason) == (-1, reason)


def test_a_letter_followed_by_a_dot_beyond_the_options_is_not_rule_two():
    assert extract_choice("D. glass", 3).index == -1


# --- scoring ---


def test_missing_and_unparsed_answers_are_counted_wrong_and_listed():
    problems = [problem(pid="1"), problem(pid="2"), problem(pid="3")]
    score = score_answers(problems, {"1": "B", "2": "I think metal", "99": "A"})
    assert (score.correct, score.count) == (1, 3)
    assert score.results == {"1": 1, "2": -1, "3": -1}
    assert score.unparsed == {"2": "no_match"}
    assert score.missing == ["3"]
    assert score.ignored == 1
    assert score.acc == pytest.approx(100 / 3)


def test_result_json_has_the_contract_fields():
    result = score_answers([problem()], {"7": "The answer is B."}).to_json()
    assert {"acc", "correct", "count", "unparsed", "missing", "results", "breakdown"} <= set(result)
    assert list(result["breakdown"]) == list(GROUPS)
    assert result["unparsed"] == [] and result["missing"] == []


def test_breakdown_groups_follow_subject_context_image_and_grade():
    problems = [
        problem(pid="nat-text", subject="natural science", hint="a passage", grade=2),
        problem(pid="soc-img", subject="social science", image="x.png", grade=8),
        problem(pid="lan-none", subject="language science", grade=12),
        problem(pid="nat-both", subject="natural science", hint="h", image="y.png", grade=6),
    ]
    right = {"nat-text": "B", "soc-img": "B", "lan-none": "A", "nat-both": "A"}
    score = score_answers(problems, right)
    assert score.breakdown == {
        "NAT": 50.0,
        "SOC": 100.0,
        "LAN": 0.0,
        "TXT": 50.0,
        "IMG": 50.0,
        "NO": 0.0,
        "G1-6": 50.0,
        "G7-12": 50.0,
        "Avg": 50.0,
    }
    assert score.group_sizes["NO"] == 1 and score.group_sizes["IMG"] == 2


def test_percentages_have_two_decimals_and_an_empty_group_is_none():
    problems = [problem(pid=str(i), grade=4) for i in range(3)]
    score = score_answers(problems, {"0": "B", "1": "B", "2": "A"})
    assert score.breakdown["Avg"] == 66.67
    assert score.breakdown["G7-12"] is None
    assert score.breakdown["SOC"] is None


def test_the_table_puts_the_published_llava_rows_beside_the_run():
    table = breakdown_table(score_answers([problem()], {"7": "B"}), "ours")
    assert list(table.columns) == list(GROUPS)
    assert table.loc["ours", "Avg"] == 100.0
    assert table.loc["LLaVA (published)", "Avg"] == 90.92
    assert table.loc["LLaVA+GPT-4 judge (published)", "Avg"] == 92.53
