"""ScienceQA against real data: LLaVA-13B's released test outputs, real problems.

LLaVA's test_sqa_llava_13b_v0.json holds each output and the choice index LLaVA's own scorer
extracted from it. tests/data keeps the outputs of the 361 test problems in
scienceqa/problems.json (with the first 100 train problems) and of pid 3247; the whole file
(4,241 outputs) is read from ../shared/data where it is.
"""

from __future__ import annotations

import json

import pytest

from instructgen.scienceqa.files import read_answers, read_official
from instructgen.scienceqa.problems import (
    GROUPS,
    SUBJECTS,
    extract_choice,
    llava_record,
    parse_format,
    score_answers,
)

MOST_CHOICES = 5  # ScienceQA problems have 2 to 5 options


LLAVA_OUTPUTS = "llava/test_sqa_llava_13b_v0_362.json"


@pytest.fixture(scope="module")
def llava(test_data):
    return json.loads((test_data / LLAVA_OUTPUTS).read_text())


@pytest.fixture(scope="module")
def test_split(test_data):
    sqa = test_data / "scienceqa"
    return read_official(sqa / "problems.json", sqa / "pid_splits.json", "test")


def test_extraction_agrees_with_llava_on_every_test_problem_present(llava, test_split):
    for p in test_split.problems:
        got = extract_choice(llava["outputs"][p.pid], len(p.choices))
        assert got.index == llava["results"][p.pid], p.pid


def assert_extraction_differs_only_where_llava_guessed(llava: dict) -> None:
    """Without the problem, assume the most options (5). LLaVA's scorer picks a random option
    when the letter is beyond the problem's options; that happened once, for pid 3247."""
    differ = set()
    for pid, text in llava["outputs"].items():
        got = extract_choice(text, MOST_CHOICES)
        assert got.index >= 0, pid  # every output holds exactly one `The answer is X.`
        if got.index != llava["results"][pid]:
            differ.add(pid)
    assert differ == {"3247"}
    assert llava["outputs"]["3247"].rstrip().endswith("The answer is D.")
    assert llava["results"]["3247"] != 3


def test_extraction_parses_all_362_outputs_and_differs_only_where_llava_guessed(llava):
    assert len(llava["outputs"]) == 362
    assert_extraction_differs_only_where_llava_guessed(llava)


@pytest.mark.shared_data
def test_extraction_parses_all_4241_outputs_and_differs_only_where_llava_guessed(shared_data):
    llava = json.loads((shared_data / "llava" / "test_sqa_llava_13b_v0.json").read_text())
    assert len(llava["outputs"]) == 4241
    assert_extraction_differs_only_where_llava_guessed(llava)


def test_llava_outputs_score_88_64_on_the_361_test_problems_present(test_data, test_split):
    answers = read_answers(test_data / LLAVA_OUTPUTS)
    score = score_answers(test_split.problems, answers)
    assert (score.correct, score.count) == (320, 361)
    assert score.breakdown["Avg"] == 88.64
    assert score.unparsed == {} and score.missing == []
    assert score.ignored == 1  # pid 3247, whose problem is not in the file


def test_breakdown_matches_a_plain_count_over_llavas_own_indices(llava, test_split):
    """Each group recomputed by hand from the indices LLaVA's scorer extracted."""
    score = score_answers(test_split.problems, llava["outputs"])
    in_group = {code: (lambda p, s=subject: p.subject == s) for code, subject in SUBJECTS.items()}
    in_group |= {
        "TXT": lambda p: p.hint != "",
        "IMG": lambda p: p.image is not None,
        "NO": lambda p: p.hint == "" and p.image is None,
        "G1-6": lambda p: p.grade <= 6,
        "G7-12": lambda p: p.grade > 6,
        "Avg": lambda p: True,
    }
    for group in GROUPS:
        members = [p for p in test_split.problems if in_group[group](p)]
        right = sum(llava["results"][p.pid] == p.answer for p in members)
        assert score.breakdown[group] == round(100 * right / len(members), 2), group
    assert score.group_sizes["IMG"] == 167 and score.group_sizes["Avg"] == 361


@pytest.mark.parametrize("code", ["QCM-LEA", "QCM-ALE", "QCM-AE", "QCM-A", "CQM-A"])
def test_every_required_format_converts_the_real_train_problems(test_data, code):
    sqa = test_data / "scienceqa"
    train = read_official(sqa / "problems.json", sqa / "pid_splits.json", "train")
    fmt = parse_format(code)
    records = [llava_record(p, fmt) for p in train.problems]
    assert len(train.problems) == 100 and all(records)
    for p, r in zip(train.problems, records, strict=True):
        human, gpt = (turn["value"] for turn in r["conversations"])
        assert human.count("<image>") == (1 if p.image else 0)
        assert ("image" in r) == (p.image is not None)
        assert extract_choice(gpt, len(p.choices)).index == p.answer
