"""`instructgen answer`: an OpenAI-compatible vision endpoint through the batch client (the
local test server), and a tiny trained checkpoint on CPU, both on real qa90 questions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from openai_server import OpenAITestServer, ServerConfig
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.errors import InputError

KEY = "sk-test-answer-0123456789SECRET"
N = 6  # the first six qa90 questions: two images, each with conv, detail and complex


@pytest.fixture
def qa90(tmp_path, test_data):
    """The first N real qa90 questions and their two images (real COCO photos standing in
    for the val2014 ones, which are not bundled)."""
    lines = (test_data / "llava" / "qa90_questions.jsonl").read_text().splitlines()[:N]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(lines) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    photos = sorted((test_data / "train_images").iterdir())
    for k, name in enumerate(dict.fromkeys(json.loads(line)["image"] for line in lines)):
        shutil.copy(photos[k], images / name)
    return questions, images


@pytest.fixture
def server():
    s = OpenAITestServer(ServerConfig()).start_in_thread()
    yield s
    s.stop()


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def answer(*args):
    env = {"OPENAI_API_KEY": KEY}
    return CliRunner().invoke(app, ["answer", *map(str, args)], env=env)


def endpoint(qa90, out, server, *extra):
    questions, images = qa90
    return answer(
        "--questions", questions, "--images", images, "-o", out, "--model", "gpt-4o",
        "--base-url", server.base_url, *extra,
    )  # fmt: skip


# --- endpoint backend ---


def test_endpoint_answers_carry_the_image_and_are_written_in_llava_answer_format(
    qa90, tmp_path, server
):
    out = tmp_path / "answers.jsonl"
    result = endpoint(qa90, out, server)
    assert result.exit_code == 0, result.output
    questions, images = qa90
    lines = read_lines(out)
    assert [a["question_id"] for a in lines] == list(range(N))
    first = lines[0]
    assert set(first) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert first["prompt"] == "What is the color of the two suitcases in the image?"
    assert first["model_id"] == "gpt-4o"
    assert first["metadata"]["backend"] == "endpoint"
    photo = (images / "000000441147.jpg").read_bytes()
    seen = f"image/jpeg, {len(photo)} bytes, sha256 {hashlib.sha256(photo).hexdigest()[:12]}"
    assert seen in first["text"]  # the server got the image whole, as a base64 data URL
    request = read_lines(tmp_path / "answers.requests.jsonl")[0]
    parts = request["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": first["prompt"]}
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert request["body"]["temperature"] == 0.0
    assert "answers/s" in result.output and "tokens/s" in result.output
    assert not (tmp_path / "answers.jsonl.partial").exists()


def test_coco_val2014_file_names_are_found_for_llavas_short_image_names(qa90, tmp_path, server):
    questions, images = qa90
    for photo in list(images.iterdir()):  # as COCO's val2014 folder names them
        photo.rename(images / f"COCO_val2014_{photo.name}")
    out = tmp_path / "answers.jsonl"
    result = endpoint(qa90, out, server)
    assert result.exit_code == 0, result.output
    photo = (images / "COCO_val2014_000000441147.jpg").read_bytes()
    assert f"{len(photo)} bytes" in read_lines(out)[0]["text"]


def test_text_only_questions_are_sent_without_an_image_and_need_no_image_folder(tmp_path, server):
    questions = tmp_path / "questions.jsonl"
    lines = [
        {"question_id": "sqa-1", "text": "Which is a mammal?\nOptions: (A) frog (B) otter",
         "category": "scienceqa"},
        {"question_id": "sqa-2", "text": "Which word is a noun?", "category": "scienceqa"},
    ]  # fmt: skip
    questions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "answers.jsonl"
    result = answer(
        "--questions", questions, "-o", out, "--model", "gpt-4o", "--base-url", server.base_url
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [a["question_id"] for a in read_lines(out)] == ["sqa-1", "sqa-2"]
    requests = read_lines(tmp_path / "answers.requests.jsonl")
    assert [r["body"]["messages"][0]["content"] for r in requests] == [x["text"] for x in lines]


def test_a_question_with_an_image_and_no_image_folder_is_refused(qa90, tmp_path, server):
    result = answer(
        "--questions", qa90[0], "-o", tmp_path / "a.jsonl", "--model", "gpt-4o",
        "--base-url", server.base_url,
    )  # fmt: skip
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert "--images" in str(result.exception)
    assert not (tmp_path / "a.jsonl").exists()


def test_a_rerun_skips_answered_questions_and_asks_only_the_rest(qa90, tmp_path, server):
    out = tmp_path / "answers.jsonl"
    assert endpoint(qa90, out, server).exit_code == 0
    kept = read_lines(out)
    # as if a run was killed after two answers: they are in the partial file, the last torn
    out.unlink()
    partial = tmp_path / "answers.jsonl.partial"
    partial.write_text("".join(json.dumps(a) + "\n" for a in kept[:2]) + '{"question_id": 2, "te')
    (tmp_path / "answers.journal.sqlite").unlink()  # the answers files alone say what is done
    before = sum(server.stats()["attempts"].values())
    result = endpoint(qa90, out, server)
    assert result.exit_code == 0, result.output
    assert sum(server.stats()["attempts"].values()) - before == N - 2
    assert read_lines(out) == kept
    assert "4 new, 2 before" in result.output
    result = endpoint(qa90, out, server)
    assert sum(server.stats()["attempts"].values()) - before == N - 2
    assert "0 new, 6 before" in result.output


def test_answers_of_another_model_in_the_output_are_not_mixed_in(qa90, tmp_path, server):
    out = tmp_path / "answers.jsonl"
    assert endpoint(qa90, out, server).exit_code == 0
    result = endpoint(qa90, out, server, "--model-id", "other-model")
    assert isinstance(result.exception, InputError)
    assert "holds answers of gpt-4o, not other-model" in str(result.exception)


def test_a_missing_image_is_named_before_anything_is_sent(qa90, tmp_path, server):
    (qa90[1] / "000000353536.jpg").unlink()
    result = endpoint(qa90, tmp_path / "answers.jsonl", server)
    assert isinstance(result.exception, InputError)
    assert "3 image(s) not found" in str(result.exception)
    assert "first 000000353536.jpg (question 3)" in str(result.exception)
    assert server.stats()["attempts"] == {}
    assert not (tmp_path / "answers.jsonl").exists()


def test_a_dry_run_prints_the_estimate_and_answers_nothing(qa90, tmp_path, server):
    result = endpoint(qa90, tmp_path / "answers.jsonl", server, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: 6 of 6 requests to send" in result.output
    assert server.stats()["attempts"] == {}
    assert not (tmp_path / "answers.jsonl").exists()


# --- checkpoint backend (extra [train]) ---


@pytest.fixture(scope="module")
def trained(towers, test_data, tmp_path_factory):
    """A checkpoint trained through both stages (one step each) by `instructgen train`."""
    out = tmp_path_factory.mktemp("trained")
    vision, llm = towers
    common = ["--images", test_data / "train_images", "--max-steps", 1, "--batch-size", 2]
    common += ["--micro-batch-size", 2]
    common += ["--workers", 0, "--precision", "fp32", "--no-gradient-checkpointing"]
    stage1 = ["--stage", 1, "--data", test_data / "train_pretrain.json", "--vision", vision]
    stage1 += ["--llm", llm, "-o", out / "stage1"]
    stage2 = ["--stage", 2, "--data", test_data / "train_instruct.json"]
    stage2 += ["--projector", out / "stage1", "-o", out / "stage2"]
    for args in (stage1, stage2):
        result = CliRunner().invoke(app, ["train", *map(str, args + common)])
        assert result.exit_code == 0, result.output
    return out / "stage2"


@pytest.mark.train
def test_checkpoint_answers_are_written_in_llava_answer_format(qa90, trained, tmp_path):
    questions, images = qa90
    out = tmp_path / "answers.jsonl"
    result = answer(
        "--questions", questions, "--images", images, "-o", out, "--model", trained,
        "--batch-size", 4, "--max-new-tokens", 6,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = read_lines(out)
    assert [a["question_id"] for a in lines] == list(range(N))
    assert {a["model_id"] for a in lines} == {"stage2"}
    meta = lines[0]["metadata"]
    assert (meta["backend"], meta["template"], meta["temperature"]) == ("checkpoint", "v1", 0.0)
    assert all(0 < a["metadata"]["completion_tokens"] <= 6 for a in lines)
    assert "6 new, 0 before, 0 failed of 6 questions" in result.output


@pytest.mark.train
def test_batched_answers_equal_answers_one_at_a_time(qa90, towers, tmp_path):
    """Left padding: a short prompt padded to a long one's width answers as it does alone."""
    import torch

    from instructgen.eval.generate import generate_batch, load_answerer
    from instructgen.eval.records import read_questions
    from instructgen.train.export import TrainedWith, export_model
    from instructgen.train.model import Towers, build_model, load_image_processor, load_tokenizer

    vision, llm = map(str, towers)
    tokenizer = load_tokenizer(llm)
    torch.manual_seed(0)
    model = build_model(Towers(vision, llm), tokenizer)
    with torch.no_grad():  # weights large enough that the answer depends on the question
        for p in model.model.language_model.parameters():
            p.normal_(std=0.5)
    meta = TrainedWith(2, vision, llm, "linear", -2, "v1", False)
    export_model(model, tokenizer, load_image_processor(vision), tmp_path / "ckpt", meta)
    answerer = load_answerer(tmp_path / "ckpt", torch.float32, "cpu")
    questions = read_questions(qa90[0])
    assert len({len(q.text) for q in questions}) > 1
    batched = generate_batch(answerer, questions, qa90[1], 8, 0.0)
    alone = [generate_batch(answerer, [q], qa90[1], 8, 0.0)[0] for q in questions]
    assert batched == alone
    assert len({text for text, _, _ in alone}) > 1


@pytest.mark.train
def test_a_batch_mixing_text_only_and_image_questions_answers_each_as_alone(qa90, trained):
    """Image rows get their own pixels in row order; text-only rows get no image tokens."""
    import dataclasses

    import torch

    from instructgen.eval.generate import generate_batch, load_answerer
    from instructgen.eval.records import read_questions

    answerer = load_answerer(trained, torch.float32, "cpu")
    questions = read_questions(qa90[0])
    mixed = [dataclasses.replace(q, image=None) if i % 2 else q for i, q in enumerate(questions)]
    batched = generate_batch(answerer, mixed, qa90[1], 6, 0.0)
    alone = [generate_batch(answerer, [q], qa90[1], 6, 0.0)[0] for q in mixed]
    assert batched == alone


@pytest.mark.train
def test_a_folder_that_is_not_a_llava_model_is_refused(qa90, towers, tmp_path):
    questions, images = qa90
    result = answer(
        "--questions", questions, "--images", images, "-o", tmp_path / "a.jsonl",
        "--model", towers[1],
    )  # fmt: skip
    assert isinstance(result.exception, InputError)
    assert "model_type 'llama' is not a LLaVA model" in str(result.exception)
    assert not (tmp_path / "a.jsonl").exists()


def test_a_model_name_without_base_url_says_to_add_one(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "text": "Why is the sky blue?"}) + "\n")
    result = answer("--questions", questions, "-o", tmp_path / "a.jsonl", "--model", "gpt-4o")
    assert isinstance(result.exception, InputError)
    assert "gpt-4o: no such checkpoint folder" in str(result.exception)
    assert "add --base-url URL" in str(result.exception)


def answer_without_torch(*args) -> subprocess.CompletedProcess:
    """`instructgen answer` in a fresh interpreter where `import torch` fails, as it does
    without the [train] extra, whether or not this venv has it."""
    code = "import sys; sys.modules['torch'] = None; from instructgen.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "answer", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"OPENAI_API_KEY": KEY},
    )


def test_without_the_train_extra_a_model_name_still_says_to_add_base_url(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "text": "Why is the sky blue?"}) + "\n")
    result = answer_without_torch(
        "--questions", questions, "-o", tmp_path / "a.jsonl", "--model", "gpt-4o"
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "gpt-4o: no such checkpoint folder" in line and "add --base-url URL" in line
    assert "[train]" not in line
    assert not (tmp_path / "a.jsonl").exists()


def test_without_the_train_extra_a_checkpoint_folder_names_the_extra(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "text": "Why is the sky blue?"}) + "\n")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    result = answer_without_torch(
        "--questions", questions, "-o", tmp_path / "a.jsonl", "--model", checkpoint
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "needs the [train] extra (" in line and "is not installed)" in line
    assert "make install-train" in line and "--base-url" not in line


def test_a_question_the_endpoint_refuses_is_reported_and_asked_again_on_rerun(
    qa90, tmp_path, server
):
    questions, _ = qa90
    lines = [json.loads(line) for line in questions.read_text().splitlines()]
    original = lines[4]["text"]
    lines[4]["text"] += " [[faults: 400]]"  # the test server answers this one with a 400
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "answers.jsonl"
    result = endpoint(qa90, out, server)
    assert result.exit_code == 1
    assert "1 question(s) got no answer" in str(result.exception)
    assert [a["question_id"] for a in read_lines(out)] == [0, 1, 2, 3, 5]
    lines[4]["text"] = original
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = endpoint(qa90, out, server)
    assert result.exit_code == 0, result.output
    assert [a["question_id"] for a in read_lines(out)] == list(range(N))


def test_a_question_without_a_response_line_counts_as_failed_not_answered(tmp_path):
    from instructgen.eval.answer import answer_with_endpoint
    from instructgen.eval.records import Question

    questions = [Question(q, None, f"Question {q}?", "conv") for q in range(3)]

    def send(requests, responses):  # a batch that came back with one line only
        reply = {"choices": [{"message": {"content": "Yes."}, "finish_reason": "stop"}]}
        line = {"custom_id": "answer-1", "response": {"status_code": 200, "body": reply}}
        responses.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
        return True

    out = tmp_path / "answers.jsonl"
    stats = answer_with_endpoint(questions, None, out, "m", 0.0, 16, send)
    assert (stats.answered_now, stats.failed) == (1, 2)
    assert [a["question_id"] for a in read_lines(out)] == [1]


def test_an_output_holding_answers_without_model_id_names_them_so(test_data, tmp_path):
    from instructgen.eval.answer import AnswerFile
    from instructgen.eval.records import read_questions

    out = tmp_path / "answers.jsonl"
    shutil.copy(test_data / "llava" / "qa90_gpt4_answer.jsonl", out)  # LLaVA's: no model_id
    items = read_questions(test_data / "llava" / "qa90_questions.jsonl")
    with pytest.raises(InputError, match=r"holds answers of \(no model_id\), not tiny"):
        AnswerFile(out, items, "tiny")
