"""`instructgen scienceqa convert | questions | score` on real ScienceQA problems.

tests/data/scienceqa_problems.json holds 13 real problems (official schema) and
scienceqa_pid_splits.json lists them by split, plus one pid per split that the problems file
lacks, as the official splits do for a partial problems file. Images are small placeholders
made here; parquet files are written here in the Hugging Face layout.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from instructgen.cli import app
from instructgen.errors import InputError
from instructgen.scienceqa.files import read_answers, read_parquet

TRAIN = ["1", "2", "9", "30", "33", "40"]
TEST = ["4", "5", "11", "15", "22", "23"]
HF_FIELDS = ["question", "choices", "answer", "hint", "task", "grade", "subject", "topic"]
HF_FIELDS += ["category", "skill", "lecture", "solution"]


@pytest.fixture()
def official(test_data):
    return ["--problems", str(test_data / "scienceqa_problems.json"),
            "--pid-splits", str(test_data / "scienceqa_pid_splits.json")]  # fmt: skip


@pytest.fixture()
def problems(test_data):
    return json.loads((test_data / "scienceqa_problems.json").read_text())


def png(color=(200, 30, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


def official_images(root, problems, split_folders=True):
    """Placeholder images where the official layout keeps them: images/{split}/{pid}/image.png."""
    for pid, p in problems.items():
        if p["image"]:
            folder = root / p["split"] / pid if split_folders else root / pid
            folder.mkdir(parents=True)
            (folder / p["image"]).write_bytes(png())
    return root


def hf_parquet(path, rows):
    """A parquet file in the Hugging Face layout: the fields, the image as {bytes, path}."""
    columns = {f: [r[f] for r in rows] for f in HF_FIELDS}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([r.get("image_bytes") for r in rows], image),
            **{f: pa.array(v) for f, v in columns.items() if f != "answer"},
            "answer": pa.array(columns["answer"], pa.int8()),
        }
    )
    pq.write_table(table, path)
    return path


def hf_rows(problems, pids):
    rows = []
    for pid in pids:
        row = dict(problems[pid])
        if row.pop("image"):
            row["image_bytes"] = {"bytes": png(), "path": None}
        rows.append(row)
    return rows


def invoke(*args):
    return CliRunner().invoke(app, ["scienceqa", *map(str, args)])


# --- convert, official layout ---


def test_convert_writes_one_record_per_problem_of_the_split(official, tmp_path, problems):
    out = tmp_path / "train.json"
    result = invoke("convert", *official, "--split", "train", "-o", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == TRAIN
    assert "1 absent" in result.output
    for r in records:
        human = r["conversations"][0]["value"]
        if problems[r["id"]]["image"]:
            assert human.count("<image>") == 1
            assert r["image"] == f"train/{r['id']}/image.png"
        else:
            assert "image" not in r and "<image>" not in human


def test_converted_records_are_what_the_trainer_reads(official, tmp_path, problems):
    pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
    from instructgen.train.data import check_template, read_records

    images = official_images(tmp_path / "images", problems)
    out = tmp_path / "train.json"
    invoke("convert", *official, "--split", "train", "-o", out, "--images", images)
    records = read_records(out, images)
    check_template(records, "v1", out)
    assert [len(r.images) for r in records] == [1, 1, 0, 0, 0, 1]


def test_convert_without_images_says_the_paths_are_unchecked(official, tmp_path):
    result = invoke("convert", *official, "--split", "train", "-o", tmp_path / "t.json")
    assert "not checked" in result.output
    assert "pass --images DIR" in result.output


@pytest.mark.parametrize("split_folders", [True, False])
def test_convert_with_images_writes_paths_that_resolve_under_them(
    official, tmp_path, problems, split_folders
):
    images = official_images(tmp_path / "images", problems, split_folders)
    out = tmp_path / "train.json"
    result = invoke("convert", *official, "--split", "train", "-o", out, "--images", images)
    assert result.exit_code == 0, result.output
    paths = [r["image"] for r in json.loads(out.read_text()) if "image" in r]
    assert len(paths) == 3
    assert all((images / p).is_file() for p in paths)


def test_a_missing_image_file_is_an_error_listing_the_pids(official, tmp_path, problems):
    images = official_images(tmp_path / "images", problems)
    (images / "train" / "40" / "image.png").unlink()
    (images / "train" / "2" / "image.png").unlink()
    out = tmp_path / "train.json"
    result = invoke("convert", *official, "--split", "train", "-o", out, "--images", images)
    assert isinstance(result.exception, InputError)
    assert "2 image files missing for pids 2, 40" in str(result.exception)
    assert not out.exists()


def test_the_format_code_shapes_every_record(official, tmp_path):
    out = tmp_path / "a.json"
    result = invoke("convert", *official, "--split", "test", "-o", out, "--format", "QCM-ALE")
    assert result.exit_code == 0, result.output
    for r in json.loads(out.read_text()):
        assert r["conversations"][1]["value"].startswith("The answer is ")


def test_an_unknown_format_letter_fails_before_reading(official, tmp_path):
    result = invoke("convert", *official, "--split", "test", "-o", tmp_path / "x.json",
                    "--format", "QCM-LEZ")  # fmt: skip
    assert "unknown output letter 'Z'" in str(result.exception)


def test_an_unknown_split_names_the_splits_there_are(official, tmp_path):
    result = invoke("convert", *official, "--split", "dev", "-o", tmp_path / "x.json")
    assert "no split 'dev'; it has test, train, val" in str(result.exception)


def test_validation_names_the_val_split_of_the_official_layout(official, tmp_path):
    result = invoke("questions", *official, "--split", "validation", "-o", tmp_path / "q.jsonl")
    assert result.exit_code == 0, result.output
    assert [
        json.loads(line)["question_id"] for line in (tmp_path / "q.jsonl").read_text().splitlines()
    ] == ["6"]


def test_a_split_with_none_of_its_pids_in_the_problems_is_an_error(test_data, tmp_path):
    splits = tmp_path / "pid_splits.json"
    splits.write_text(json.dumps({"test": ["1801", "1802"]}))
    result = invoke("score", "--problems", test_data / "scienceqa_problems.json",
                    "--pid-splits", splits, "--split", "test", "--answers", splits,
                    "-o", tmp_path / "r.json")  # fmt: skip
    assert "holds none of the 2 pids of split test" in str(result.exception)


def test_a_bad_problem_names_its_pid_and_field(test_data, tmp_path, problems):
    problems["9"]["answer"] = 3
    bad = tmp_path / "problems.json"
    bad.write_text(json.dumps(problems))
    result = invoke("convert", "--problems", bad, "--pid-splits",
                    test_data / "scienceqa_pid_splits.json", "--split", "train",
                    "-o", tmp_path / "x.json")  # fmt: skip
    assert "problem 9: 'answer' must be a 0-based index into its 3 choices" in str(result.exception)


def test_user_errors_are_one_red_line_and_exit_1(official, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "instructgen.cli", "scienceqa", "convert", *official,
         "--split", "train", "-o", str(tmp_path / "x.json"), "--images", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "image files missing" in lines[-1]
    assert "Traceback" not in run.stderr


# --- questions ---


def test_questions_are_the_input_of_answer(official, tmp_path, problems):
    out = tmp_path / "test_questions.jsonl"
    result = invoke("questions", *official, "--split", "test", "-o", out, "--format", "CQM-A")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [q["question_id"] for q in lines] == TEST
    for q in lines:
        assert q["category"] == "scienceqa"
        assert q["text"].startswith("Context: ") and "<image>" not in q["text"]
        assert ("image" in q) == bool(problems[q["question_id"]]["image"])


# --- score ---


def answer_lines(path, texts):
    with open(path, "w") as f:
        for i, (pid, text) in enumerate(texts.items()):
            line = {"question_id": pid, "prompt": "...", "text": text, "answer_id": f"a{i}",
                    "model_id": "tiny", "metadata": {}}  # fmt: skip
            f.write(json.dumps(line) + "\n")
    return path


def test_score_writes_result_json_and_prints_the_published_row(official, tmp_path, problems):
    texts = {pid: f"The answer is {'AB'[problems[pid]['answer']]}." for pid in TEST[:4]}
    texts["23"] = "I cannot tell."
    answers = answer_lines(tmp_path / "answers.jsonl", texts)
    out = tmp_path / "result.json"
    result = invoke("score", *official, "--split", "test", "--answers", answers, "-o", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert (r["correct"], r["count"]) == (4, 6)
    assert r["unparsed"] == ["23"] and r["missing"] == ["22"]
    assert r["results"]["23"] == -1 and r["results"]["22"] == -1
    assert r["breakdown"]["Avg"] == 66.67
    assert "LLaVA" in result.output and "(published)" in result.output
    assert "unparsed (no_match 1): 23" in result.output


def test_result_json_keeps_the_outputs_and_scores_again_as_answers(official, tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "4", "text": "B"}) + "\n")
    first, again = tmp_path / "result.json", tmp_path / "again.json"
    invoke("score", *official, "--split", "test", "--answers", answers, "-o", first)
    assert json.loads(first.read_text())["outputs"] == {"4": "B"}
    result = invoke("score", *official, "--split", "test", "--answers", first, "-o", again)
    assert result.exit_code == 0, result.output
    assert json.loads(again.read_text())["results"] == json.loads(first.read_text())["results"]


def test_llava_result_json_is_read_from_its_outputs(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"acc": 50.0, "results": {"4": 1}, "outputs": {"4": "B", 5: "A"}}))
    assert read_answers(path) == {"4": "B", "5": "A"}


def test_answer_lines_with_numeric_ids_are_keyed_by_pid(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 4, "text": "B"}\n')
    assert read_answers(path) == {"4": "B"}


def test_a_question_answered_twice_differently_is_an_error(tmp_path):
    path = answer_lines(tmp_path / "a.jsonl", {"4": "A"})
    with open(path, "a") as f:
        f.write(json.dumps({"question_id": "4", "text": "B"}) + "\n")
    with pytest.raises(InputError, match=r"a.jsonl:2: question 4 is answered again"):
        read_answers(path)


def test_an_answer_line_without_text_names_its_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": "4", "text": "A"}\n{"question_id": "5"}\n')
    with pytest.raises(InputError, match=r"a.jsonl:2: an answer line needs question_id and text"):
        read_answers(path)


# --- Hugging Face parquet layout ---


def test_parquet_rows_become_split_row_ids_and_images_are_written(tmp_path, problems):
    data = tmp_path / "data"
    data.mkdir()
    hf_parquet(data / "train-00000-of-00002.parquet", hf_rows(problems, TRAIN[:3]))
    hf_parquet(data / "train-00001-of-00002.parquet", hf_rows(problems, TRAIN[3:]))
    hf_parquet(data / "test-00000-of-00001.parquet", hf_rows(problems, TEST))
    out, images = tmp_path / "train.json", tmp_path / "imgs"
    result = invoke("convert", "--parquet", data, "--split", "train", "-o", out,
                    "--images-out", images)  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == [f"train-{i}" for i in range(6)]
    with_image = [r for r in records if "image" in r]
    assert [r["image"] for r in with_image] == ["train-0.png", "train-1.png", "train-5.png"]
    assert all((images / r["image"]).read_bytes() == png() for r in with_image)
    again = invoke("convert", "--parquet", data, "--split", "train", "-o", out,
                   "--images-out", images)  # fmt: skip
    assert "0 written, 3 already there" in again.output


def test_the_dataset_folder_above_data_is_read_too(tmp_path, problems):
    (tmp_path / "ScienceQA" / "data").mkdir(parents=True)
    hf_parquet(tmp_path / "ScienceQA" / "data" / "test-00000-of-00001-5e5c.parquet",
               hf_rows(problems, TEST))  # fmt: skip
    read = read_parquet([tmp_path / "ScienceQA"], "test", None)
    assert [p.pid for p in read.problems] == [f"test-{i}" for i in range(len(TEST))]


def test_parquet_image_suffix_follows_the_bytes(tmp_path, problems):
    rows = hf_rows(problems, ["1"])
    rows[0]["image_bytes"] = {"bytes": png(fmt="JPEG"), "path": "image.jpg"}
    path = hf_parquet(tmp_path / "test.parquet", rows)
    read = read_parquet([path], "test", tmp_path / "imgs")
    assert read.problems[0].image == "test-0.jpg"
    assert (tmp_path / "imgs" / "test-0.jpg").is_file()


def test_the_validation_split_is_val_in_ids(tmp_path, problems):
    hf_parquet(tmp_path / "validation-00000-of-00001.parquet", hf_rows(problems, ["6"]))
    read = read_parquet([tmp_path], "validation", None)
    assert [p.pid for p in read.problems] == ["val-0"]


def test_parquet_with_images_needs_images_out(tmp_path, problems):
    path = hf_parquet(tmp_path / "train.parquet", hf_rows(problems, TRAIN))
    result = invoke("convert", "--parquet", path, "--split", "train", "-o", tmp_path / "t.json")
    assert "pass --images-out DIR" in str(result.exception)


def test_a_parquet_file_named_for_another_split_is_refused(tmp_path, problems):
    path = hf_parquet(tmp_path / "test-00000-of-00001.parquet", hf_rows(problems, TEST))
    result = invoke("questions", "--parquet", path, "--split", "train", "-o", tmp_path / "q",
                    "--images-out", tmp_path / "i")  # fmt: skip
    assert "its name says split test, not train" in str(result.exception)


def test_a_parquet_file_without_scienceqa_columns_is_named(tmp_path):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.table({"question": ["?"]}), path)
    with pytest.raises(InputError, match="no column choices, answer, subject, grade"):
        read_parquet([path], "test", None)


def test_parquet_questions_and_score_close_the_loop(tmp_path, problems):
    path = hf_parquet(tmp_path / "test-00000-of-00001.parquet", hf_rows(problems, TEST))
    questions, images = tmp_path / "q.jsonl", tmp_path / "imgs"
    result = invoke("questions", "--parquet", path, "--split", "test", "-o", questions,
                    "--images-out", images)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in questions.read_text().splitlines()]
    assert all((images / q["image"]).is_file() for q in lines if "image" in q)
    texts = {q["question_id"]: "A" for q in lines}
    answers = answer_lines(tmp_path / "answers.jsonl", texts)
    out = tmp_path / "result.json"
    result = invoke("score", "--parquet", path, "--split", "test", "--answers", answers, "-o", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    expected = sum(problems[pid]["answer"] == 0 for pid in TEST)
    assert (r["correct"], r["count"]) == (expected, 6)
    assert r["breakdown"]["IMG"] is not None
