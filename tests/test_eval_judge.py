"""`instructgen judge` on the real LLaVA-Bench qa90 files, against the local test server whose
verdicts are scripted per question, so that every score in the outputs is known."""

from __future__ import annotations

import json
import shutil

import pytest
from openai_server import OpenAITestServer, ServerConfig
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.errors import InputError

KEY = "sk-test-judge-0123456789SECRET"
CATEGORY = {0: "conv", 1: "detail", 2: "complex"}  # qa90: question_id % 3
VERDICT = {  # category -> a verdict in the form judges write it, reference 1st
    "conv": "8 6\nAssistant 1 names both colours; Assistant 2 misses one.",
    "detail": "8/10, 8/10\nBoth describe the scene well.",
    "complex": "I reason first.\n\nScores:\nAssistant 1: 10 (complete)\nAssistant 2: 5 (thin)",
}
UNPARSED_QID = 89  # a complex question whose verdict gives no scores


@pytest.fixture(scope="module")
def qa90(test_data):
    """LLaVA-Bench qa90: its questions, GPT-4's answers and the images' contexts."""
    return test_data / "llava"


def write_candidate(path):
    """Candidate answers to all 90 questions; each text names its question for the script."""
    lines = [
        {"question_id": q, "prompt": "", "text": f"candidate {q}: an answer.", "answer_id": f"a{q}"}
        | {"model_id": "tiny-llava", "metadata": {}}
        for q in range(90)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def candidate(tmp_path):
    return write_candidate(tmp_path / "candidate.jsonl")


def scripted(swap_verdict: str | None = None) -> dict[str, str]:
    """Server replies keyed by the candidate's place in the judge's message."""
    replies = {}
    for q in range(90):
        verdict = "No scores here, sorry." if q == UNPARSED_QID else VERDICT[CATEGORY[q % 3]]
        replies[f"[Assistant 2]\ncandidate {q}:"] = verdict
        if swap_verdict:
            replies[f"[Assistant 1]\ncandidate {q}:"] = swap_verdict
    return replies


@pytest.fixture
def server():
    servers = []

    def start(replies) -> OpenAITestServer:
        servers.append(OpenAITestServer(ServerConfig(replies=replies)).start_in_thread())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def judge(qa90, candidate, out, server, *extra):
    args = ["judge", "--questions", qa90 / "qa90_questions.jsonl"]
    args += ["--contexts", qa90 / "caps_boxes_coco2014_val_80.jsonl"]
    args += ["--reference", qa90 / "qa90_gpt4_answer.jsonl", "--candidate", candidate]
    args += ["-o", out, "--base-url", server.base_url, "--tpm", "100000000", *extra]
    env = {"OPENAI_API_KEY": KEY, "COLUMNS": "150"}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def judged(qa90, tmp_path_factory):
    """One judge run with the scripted verdicts: (output folder, result, server)."""
    root = tmp_path_factory.mktemp("judged")
    server = OpenAITestServer(ServerConfig(replies=scripted())).start_in_thread()
    result = judge(qa90, write_candidate(root / "candidate.jsonl"), root / "out", server)
    assert result.exit_code == 0, result.output
    yield root / "out", result, server
    server.stop()


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_requests_show_context_question_reference_first_then_candidate(judged, qa90):
    out, _, _ = judged
    requests = read_lines(out / "requests.jsonl")
    assert [r["custom_id"] for r in requests] == [f"judge-{q}" for q in range(90)]
    body = requests[0]["body"]
    assert (body["model"], body["temperature"]) == ("gpt-4o", 0.2)
    user = body["messages"][1]["content"]
    reference = read_lines(qa90 / "qa90_gpt4_answer.jsonl")[0]["text"]
    assert "- Two antique suitcases sit stacked one on top of the other." in user
    assert "- suitcase: [" in user
    assert "What is the color of the two suitcases in the image?" in user
    assert user.index(reference) < user.index("candidate 0: an answer.")
    assert f"[Assistant 1]\n{reference}\n[End of Assistant 1]" in user


def test_a_dry_run_writes_the_requests_and_sends_nothing(tmp_path, qa90, candidate, server):
    running = server(scripted())
    result = judge(qa90, candidate, tmp_path / "out", running, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: 90 of 90 requests to send" in result.output
    assert len(read_lines(tmp_path / "out" / "requests.jsonl")) == 90
    assert running.stats()["attempts"] == {}
    assert not (tmp_path / "out" / "reviews.jsonl").exists()


def test_relative_scores_per_category_and_overall_count_only_parsed_verdicts(judged):
    out, result, _ = judged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conv"]["relative"] == 75.0
    assert summary["detail"]["relative"] == 100.0
    assert (summary["complex"]["relative"], summary["complex"]["unparsed"]) == (50.0, 1)
    # 89 parsed verdicts: conv 30 x (8, 6), detail 30 x (8, 8), complex 29 x (10, 5)
    assert summary["all"] == {
        "relative": round(100 * 565 / 770, 1),
        "reference_mean": round(770 / 89, 3),
        "candidate_mean": round(565 / 89, 3),
        "n": 90,
        "unparsed": 1,
        "failed": 0,
        "missing": 0,
    }
    assert summary["judge"] == {
        "model": "gpt-4o",
        "temperature": 0.2,
        "swap": False,
        "compat": None,
    }
    assert list(summary) == ["all", "conv", "detail", "complex", "judge"]
    reviews = read_lines(out / "reviews.jsonl")
    assert reviews[0] == {
        "question_id": 0,
        "category": "conv",
        "scores": [8.0, 6.0],
        "text": VERDICT["conv"],
        "tuple": [8.0, 6.0],
    }
    assert reviews[UNPARSED_QID]["scores"] is None
    assert reviews[UNPARSED_QID]["text"] == "No scores here, sorry."
    assert "73.4" in result.output and "unparsed" in result.output
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compat_llava_counts_an_unparsed_verdict_as_minus_one_twice(judged, qa90, tmp_path):
    first, _, running = judged
    out = tmp_path / "out"
    shutil.copytree(first, out)  # the same requests: the journal answers them all
    candidate = first.parent / "candidate.jsonl"
    result = judge(qa90, candidate, out, running, "--compat", "llava")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complex"]["relative"] == round(100 * (145 - 1) / (290 - 1), 1)  # 49.8
    assert summary["all"]["relative"] == round(100 * (565 - 1) / (770 - 1), 1)  # 73.3
    assert summary["complex"]["unparsed"] == 1
    assert summary["judge"]["compat"] == "llava"


def test_reviews_carry_llavas_tuple_so_its_summary_arithmetic_reads_them(judged):
    out, _, _ = judged
    tuples: dict[str, list] = {}
    for review in read_lines(out / "reviews.jsonl"):  # as LLaVA's summary script reads them
        tuples.setdefault(review["category"], []).append(review["tuple"])
        tuples.setdefault("all", []).append(review["tuple"])
    means = {
        k: [round(sum(x) / len(v), 3) for x in zip(*v, strict=True)] for k, v in tuples.items()
    }
    assert tuples["complex"][UNPARSED_QID // 3] == [-1, -1]
    assert round(100 * means["complex"][1] / means["complex"][0], 1) == 49.8
    assert round(100 * means["all"][1] / means["all"][0], 1) == 73.3


def test_swap_averages_both_orders_and_reports_the_first_position_gain(
    tmp_path, qa90, candidate, server
):
    out = tmp_path / "out"
    replies = scripted(swap_verdict="8 6\nThe first answer is better.")
    result = judge(qa90, candidate, out, server(replies), "--swap")
    assert result.exit_code == 0, result.output
    requests = read_lines(out / "requests.jsonl")
    assert [r["custom_id"] for r in requests[:2]] == ["judge-0", "judge-0-swap"]
    swapped = requests[1]["body"]["messages"][1]["content"]
    assert swapped.index("candidate 0: an answer.") < swapped.index("[Assistant 2]")
    conv = json.loads((out / "summary.json").read_text())["conv"]
    # conv: reference first 8 vs 6, candidate first 8 vs 6: each scores 7 on average
    assert (conv["reference_mean"], conv["candidate_mean"], conv["relative"]) == (7.0, 7.0, 100.0)
    assert conv["first_position_gain"] == 2.0
    review = read_lines(out / "reviews.jsonl")[0]
    assert review["order_scores"] == [8.0, 6.0] and review["swap_scores"] == [6.0, 8.0]
    assert review["scores"] == [7.0, 7.0]


def test_a_rerun_resumes_from_the_journal_and_sends_nothing_again(judged, qa90):
    out, _, running = judged
    first = (out / "summary.json").read_text()
    assert sum(running.stats()["attempts"].values()) == 90
    result = judge(qa90, out.parent / "candidate.jsonl", out, running)
    assert result.exit_code == 0, result.output
    assert sum(running.stats()["attempts"].values()) == 90
    assert (out / "summary.json").read_text() == first


def test_judging_other_answers_into_a_judged_folder_is_refused(judged, qa90, tmp_path):
    first, _, running = judged
    out = tmp_path / "out"
    shutil.copytree(first, out)
    result = judge(qa90, qa90 / "qa90_gpt4_answer.jsonl", out, running)
    assert isinstance(result.exception, InputError)
    assert "holds verdicts on other answers or judge settings (90 request(s) differ" in str(
        result.exception
    )
    assert (out / "requests.jsonl").read_bytes() == (first / "requests.jsonl").read_bytes()


def test_questions_missing_an_answer_are_listed_and_the_complete_pairs_judged(
    tmp_path, qa90, candidate, server
):
    lines = candidate.read_text().splitlines()
    candidate.write_text("\n".join(lines[2:]) + "\n")  # no answers to questions 0 and 1
    out = tmp_path / "out"
    result = judge(qa90, candidate, out, server(scripted()))
    assert result.exit_code == 1
    assert "2 question(s) were not judged" in str(result.exception)
    assert "question ids 0, 1" in str(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["all"]["n"], summary["all"]["missing"]) == (88, 2)
    assert summary["missing_question_ids"] == [0, 1]
    assert len(read_lines(out / "reviews.jsonl")) == 88


def test_a_dry_run_also_names_the_questions_missing_an_answer_and_exits_1(
    tmp_path, qa90, candidate, server
):
    lines = candidate.read_text().splitlines()
    candidate.write_text("\n".join(lines[1:]) + "\n")  # no answer to question 0
    running = server(scripted())
    result = judge(qa90, candidate, tmp_path / "out", running, "--dry-run")
    assert result.exit_code == 1
    assert "dry run: 89 of 89 requests to send" in result.output
    assert "1 question(s) were not judged, an answer is missing (question ids 0)" in str(
        result.exception
    )
    assert running.stats()["attempts"] == {}


def test_a_failed_judge_request_is_counted_as_failed_and_unparsed_and_exits_1(
    tmp_path, qa90, candidate, server
):
    lines = [json.loads(line) for line in candidate.read_text().splitlines()]
    lines[3]["text"] += " [[faults: 400]]"  # the test server refuses this request
    candidate.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    result = judge(qa90, candidate, out, server(scripted()))
    assert result.exit_code == 1
    assert "1 judge request(s) failed" in str(result.exception)
    conv = json.loads((out / "summary.json").read_text())["conv"]
    assert (conv["n"], conv["unparsed"], conv["failed"], conv["relative"]) == (30, 1, 1, 75.0)
    review = read_lines(out / "reviews.jsonl")[3]
    assert review["scores"] is None and "HTTP 400" in review["error"]


def test_answers_to_unknown_question_ids_are_refused_before_anything_is_written(
    tmp_path, qa90, candidate, server
):
    with candidate.open("a") as f:
        f.write(json.dumps({"question_id": 999, "text": "stray"}) + "\n")
    result = judge(qa90, candidate, tmp_path / "out", server(scripted()))
    assert isinstance(result.exception, InputError)
    assert f"{candidate}: 1 answer(s) to unknown question ids (999)" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_a_question_whose_image_has_no_context_is_refused(tmp_path, qa90, candidate, server):
    contexts = tmp_path / "contexts.jsonl"
    kept = [
        line
        for line in (qa90 / "caps_boxes_coco2014_val_80.jsonl").read_text().splitlines()
        if json.loads(line)["image"] != "000000441147.jpg"
    ]
    contexts.write_text("\n".join(kept) + "\n")
    args = ["--questions", qa90 / "qa90_questions.jsonl", "--contexts", contexts]
    args += ["--reference", qa90 / "qa90_gpt4_answer.jsonl", "--candidate", candidate]
    result = CliRunner().invoke(
        app, ["judge", *map(str, args), "-o", str(tmp_path / "out"), "--dry-run"]
    )
    assert isinstance(result.exception, InputError)
    assert "no context for image 000000441147.jpg (question 0)" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_our_contexts_file_and_coco_file_names_match_llava_questions(tmp_path, qa90):
    from instructgen.eval.judge import match_pairs
    from instructgen.eval.records import Answer, Question, read_contexts

    ours = tmp_path / "contexts.jsonl"
    context = {"image_id": 441147, "file_name": "COCO_val2014_000000441147.jpg", "width": 640}
    context |= {"height": 480, "captions": ["Two suitcases."], "boxes": []}
    ours.write_text(json.dumps(context) + "\n")
    question = Question(0, "000000441147.jpg", "What colour?", "conv")
    answer = Answer(0, "", "Brown.", "a", "m")
    pairs, missing = match_pairs([question], read_contexts(ours), {0: answer}, {0: answer}, ours)
    assert pairs[0].context.captions == ("Two suitcases.",) and missing == []


def test_an_image_name_without_a_number_matches_only_a_context_of_that_name(tmp_path):
    from instructgen.eval.judge import match_pairs
    from instructgen.eval.records import Answer, Question, read_contexts

    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text(json.dumps({"image": "cat.jpg", "captions": ["A cat."], "instances": []}))
    question = Question(0, "bird.jpg", "What bird?", "conv")
    answer = Answer(0, "", "A robin.", "a", "m")
    with pytest.raises(InputError, match="no context for image bird.jpg"):
        match_pairs([question], read_contexts(contexts), {0: answer}, {0: answer}, contexts)


def test_a_text_only_question_is_refused_in_one_line(tmp_path, qa90):
    from instructgen.eval.judge import match_pairs
    from instructgen.eval.records import Answer, Question, read_contexts

    contexts = qa90 / "caps_boxes_coco2014_val_80.jsonl"
    question = Question("sqa-4", None, "Which is a mammal?", "scienceqa")
    answer = Answer("sqa-4", "", "B", "a", "m")
    with pytest.raises(InputError, match="question 'sqa-4' has no image"):
        match_pairs(
            [question], read_contexts(contexts), {"sqa-4": answer}, {"sqa-4": answer}, contexts
        )


def test_compat_llava_divides_the_means_rounded_to_three_decimals_as_llava_does():
    from instructgen.eval.judge import JudgeSettings, Review, summarize

    # reference 5, 5, 6 (mean 5.3333), candidate 3, 3, 3: 56.25 exactly, 56.2535 from 5.333
    reviews = [Review(q, "conv", (r, 3.0), "") for q, r in enumerate((5.0, 5.0, 6.0))]
    ours = summarize(reviews, JudgeSettings("m", 0.2, 64, False, None), [])
    llava = summarize(reviews, JudgeSettings("m", 0.2, 64, False, "llava"), [])
    assert (ours["all"]["relative"], llava["all"]["relative"]) == (56.2, 56.3)


def test_an_in_the_wild_context_with_one_caption_and_no_boxes_is_read(tmp_path):
    from instructgen.eval.records import read_contexts

    path = tmp_path / "context.jsonl"
    path.write_text(json.dumps({"id": "001", "image": "001.jpg", "caption": "A ramen bowl."}))
    context = read_contexts(path)["001.jpg"]
    assert (context.captions, context.boxes) == (("A ramen bowl.",), ())


def test_a_context_without_any_caption_is_named_by_its_line(tmp_path):
    from instructgen.eval.records import read_contexts

    path = tmp_path / "context.jsonl"
    path.write_text(json.dumps({"image": "001.jpg", "instances": []}))
    with pytest.raises(InputError, match=r"context.jsonl:1: not an image context"):
        read_contexts(path)


def test_a_question_without_category_is_other_and_the_overall_score_stays_overall(tmp_path):
    from instructgen.eval.judge import JudgeSettings, Review, summarize
    from instructgen.eval.records import read_questions

    path = tmp_path / "questions.jsonl"
    lines = [{"question_id": 0, "image": "a.jpg", "text": "Q?", "category": "conv"}]
    lines += [{"question_id": 1, "image": "b.jpg", "text": "Q?"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = read_questions(path)
    assert [q.category for q in items] == ["conv", "other"]
    reviews = [Review(0, "conv", (8.0, 4.0), ""), Review(1, "other", (8.0, 8.0), "")]
    summary = summarize(reviews, JudgeSettings("m", 0.2, 64, False, None), [])
    assert (summary["all"]["n"], summary["all"]["relative"]) == (2, 75.0)


def test_a_category_named_like_a_summary_key_is_refused(tmp_path):
    from instructgen.eval.records import read_questions

    path = tmp_path / "questions.jsonl"
    path.write_text(json.dumps({"question_id": 7, "text": "Q?", "category": "all"}) + "\n")
    with pytest.raises(InputError, match=r"questions.jsonl:1: question 7: category 'all'"):
        read_questions(path)


def test_verdicts_read_every_shape_of_response_line_without_a_traceback(tmp_path):
    from instructgen.eval.judge import read_verdicts

    ok = {"status_code": 200, "body": {"choices": [{"message": {"content": "8 9\nGood."}}]}}
    lines = [
        {"custom_id": "judge-1", "response": ok},
        {"custom_id": "judge-2", "response": None, "error": "connection reset"},
        {
            "custom_id": "judge-3",
            "response": {"status_code": 500, "body": {"error": {"message": "overloaded"}}},
        },  # fmt: skip
        {"custom_id": "judge-4", "response": {"status_code": 200, "body": {"choices": [None]}}},
        {
            "custom_id": "judge-5",
            "response": {
                "status_code": 200,
                "body": {"choices": [{"message": {"content": None, "refusal": "I can't help."}}]},
            },
        },  # fmt: skip
    ]
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    verdicts = read_verdicts(path)
    assert verdicts["judge-1"] == ("8 9\nGood.", None)
    assert verdicts["judge-2"] == (None, "request failed: connection reset")
    assert verdicts["judge-3"] == (None, "HTTP 500: overloaded")
    assert verdicts["judge-4"] == (None, "the response body has no choices")
    assert verdicts["judge-5"] == (None, "the model refused: I can't help.")
