"""Judge verdicts -> two scores: the written rules, and 240 real GPT-4 verdicts."""

from __future__ import annotations

import json

import pytest

from instructgen.eval.verdicts import parse_verdict

# The real verdicts whose stored `score` our rules do not reproduce, and why.
REAL_EXCEPTIONS = {
    # "the scores are (1, 5) for Assistant 1 and Assistant 2": no first line, no scores block
    ("review_alpaca-13b_vicuna-13b.jsonl", 70): None,
    # the block reads "Assistant 1: 10 / Assistant 2: 4"; the stored [10, 2] is not in the text
    ("review_llama-13b_vicuna-13b.jsonl", 70): (10.0, 4.0),
}


@pytest.mark.parametrize(
    "first_line",
    ["8 9", "8, 9", "8/10 9/10", "8/10, 9/10", "**8 9**", "Scores: 8 9", " 8  9 ", "8 9.",
     "**8** **9**", "**Scores:** 8/10, 9/10", "8 and 9", "(8, 9)", "[8, 9]", "8 | 9"],
)  # fmt: skip
def test_two_scores_on_the_first_line_parse_in_every_written_form(first_line):
    assert parse_verdict(f"{first_line}\nAssistant 2 is more precise.") == (8.0, 9.0)


def test_half_points_are_kept():
    assert parse_verdict("9 8.5\nBoth are good.") == (9.0, 8.5)


def test_a_scores_block_parses_when_the_first_line_is_reasoning():
    text = (
        "First, I solve the problem: x = 10.\n\nAssistant 1:\nThe answer is 8.\n\n"
        "Scores:\nAssistant 1: 1 (wrong answer)\nAssistant 2: 7/10\n\nAssistant 2 did better."
    )
    assert parse_verdict(text) == (1.0, 7.0)


@pytest.mark.parametrize(
    "text",
    [
        "Assistant 1: 8/10, Assistant 2: 9/10\nBoth answer the question.",
        "**Assistant 1:** 8 **Assistant 2:** 9\nBoth answer the question.",
        "Scores (Assistant 1: 8; Assistant 2: 9)\nBoth answer the question.",
    ],
)
def test_both_assistant_scores_on_one_line_parse(text):
    assert parse_verdict(text) == (8.0, 9.0)


def test_the_last_scores_block_wins_over_earlier_mentions():
    text = (
        "Reasoning.\nAssistant 1: 3\nAssistant 2: 4\nOn reflection:\nAssistant 1: 5\nAssistant 2: 6"
    )
    assert parse_verdict(text) == (5.0, 6.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8\nonly one score",
        "8 9 10\nthree scores",
        "11 9\nout of range",
        "Assistant 1 is better than Assistant 2.",
        "Assistant 1: 7\nno second score",
    ],
)
def test_anything_else_is_unparsed(text):
    assert parse_verdict(text) is None


def test_the_240_real_gpt4_verdicts_parse_as_recorded(test_data):
    files = sorted((test_data / "llava" / "reviews").glob("review_*.jsonl"))
    seen = 0
    for path in files:
        for line in path.read_text().splitlines():
            review = json.loads(line)
            key = (path.name, review["question_id"])
            expected = REAL_EXCEPTIONS.get(key, tuple(review["score"]))
            assert parse_verdict(review["text"]) == expected, key
            seen += 1
    assert seen == 240


def test_the_real_math_verdicts_with_a_scores_block_parse_from_their_text(test_data):
    reviews = test_data / "llava" / "reviews" / "review_gpt35_vicuna-13b.jsonl"
    math = [json.loads(line) for line in reviews.read_text().splitlines()][67:70]
    assert [r["question_id"] for r in math] == [68, 69, 70]
    assert all(not r["text"].startswith(str(int(r["score"][0]))) for r in math)
    assert [parse_verdict(r["text"]) for r in math] == [(10.0, 6.0), (10.0, 1.0), (10.0, 4.0)]
