"""build.py: responses + requests + contexts -> LLaVA JSON, quarantine.jsonl, stats.json.

Fixtures (tests/data/build_*): six real COCO train2017 contexts, the 18 requests rendered from
them, and hand-written responses covering every outcome; build_expected.json says, per
custom_id, what each of its response lines must become.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from instructgen.contracts import IMAGE_TOKEN, TASKS
from instructgen.curate.build import (
    StatsCollector,
    _check_invariant,
    build,
    load_contexts,
    load_requests,
    read_stats_report,
)
from instructgen.errors import InputError, InstructgenError
from instructgen.generate.template_backend import write_template_responses

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(test_data: Path) -> dict[str, Path]:
    return {
        "responses": test_data / "build_responses.jsonl",
        "requests": test_data / "build_requests.jsonl",
        "contexts": test_data / "build_contexts.jsonl",
    }


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    build(inputs["responses"], inputs["requests"], inputs["contexts"], out, seed=7)
    return out


def read_list(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def detail_phrasings() -> set[str]:
    text = (ROOT / "prompts" / "instructions" / "detail.txt").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if line.strip()}


def test_every_response_ends_as_its_expected_record_or_quarantine_reason(built, test_data):
    expected = json.loads((test_data / "build_expected.json").read_text())
    outcomes: dict[str, list[str]] = {}
    for record in read_list(built / "llava_instruct.json"):
        outcomes.setdefault(record["custom_id"], []).append("record")
    for row in read_lines(built / "quarantine.jsonl"):
        outcomes.setdefault(row["custom_id"], []).append(row["reason"])
    assert {cid: sorted(v) for cid, v in outcomes.items()} == {
        cid: sorted(v) for cid, v in expected.items()
    }


@pytest.mark.parametrize("fixture", ["handwritten", "template", "no_responses"])
def test_invariant_holds_on_every_fixture(fixture, inputs, tmp_path):
    responses = {
        "handwritten": inputs["responses"],
        "template": tmp_path / "template.jsonl",
        "no_responses": tmp_path / "none.jsonl",
    }[fixture]
    if fixture == "template":
        write_template_responses(inputs["requests"], responses)
    if fixture == "no_responses":
        responses.write_text("")
    stats = build(responses, inputs["requests"], inputs["contexts"], tmp_path / "out")
    inv = stats["invariant"]
    records = len(read_list(tmp_path / "out" / "llava_instruct.json"))
    quarantined = len(read_lines(tmp_path / "out" / "quarantine.jsonl"))
    assert inv["holds"] is True
    assert (records, quarantined) == (inv["records"], inv["quarantined"])
    assert records + quarantined == (
        inv["requests"] + inv["unknown_responses"] + inv["duplicate_responses"]
    )
    assert inv["requests"] == 18


def test_broken_invariant_fails_loudly():
    stats = StatsCollector()
    stats.add_quarantined("detail", "empty")
    with pytest.raises(InstructgenError, match="invariant broken"):
        _check_invariant(stats, requests=2, unknown=0, duplicates=0)


def test_records_have_the_llava_shape(built):
    for record in read_list(built / "llava_instruct.json"):
        fields = ["id", "image", "conversations", "custom_id", "task", "image_mode", "flags"]
        assert list(record) == fields
        image_id = int(record["custom_id"].split("-")[1])
        assert record["id"] == f"{image_id:012d}"
        assert record["image"] == f"{image_id:012d}.jpg"
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert all(t["value"].strip() for t in turns)


def test_image_token_appears_once_in_the_first_human_turn(built):
    for record in read_list(built / "llava_instruct.json"):
        first = record["conversations"][0]["value"]
        assert first.startswith(IMAGE_TOKEN + "\n") or first.endswith("\n" + IMAGE_TOKEN)
        assert sum(t["value"].count(IMAGE_TOKEN) for t in record["conversations"]) == 1


def test_image_token_position_is_drawn_both_ways(inputs, tmp_path):
    responses = tmp_path / "template.jsonl"
    write_template_responses(inputs["requests"], responses)
    build(responses, inputs["requests"], inputs["contexts"], tmp_path / "out")
    firsts = [
        r["conversations"][0]["value"] for r in read_list(tmp_path / "out" / "llava_instruct.json")
    ]
    assert Counter(f.startswith(IMAGE_TOKEN) for f in firsts).keys() == {True, False}


def test_detail_question_comes_from_the_instruction_list(built):
    details = read_list(built / "detail.json")
    assert details
    phrasings = detail_phrasings()
    for record in details:
        question = record["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()
        assert question in phrasings


def test_instructions_option_replaces_the_detail_phrasings(inputs, tmp_path):
    (tmp_path / "instr").mkdir()
    (tmp_path / "instr" / "detail.txt").write_text("Tell me everything about this photo.\n")
    build(*inputs.values(), tmp_path / "out", instructions_dir=tmp_path / "instr")
    for record in read_list(tmp_path / "out" / "detail.json"):
        assert IMAGE_TOKEN in record["conversations"][0]["value"]
        assert "Tell me everything about this photo." in record["conversations"][0]["value"]


def test_generated_questions_are_kept_for_conversation_and_reasoning(built):
    by_id = {r["custom_id"]: r for r in read_list(built / "llava_instruct.json")}
    reasoning = by_id["coco-30752-complex_reasoning"]["conversations"]
    assert reasoning[0]["value"].replace(IMAGE_TOKEN, "").strip() == (
        "What precautions should the man take to keep his dog safe during the outing?"
    )
    conversation = by_id["coco-30752-conversation"]["conversations"]
    assert [t["value"] for t in conversation[2::2]] == ["Is he alone?", "What is he carrying?"]
    assert conversation[-1]["value"] == (
        "He has a backpack on his back, which suggests he is out for a longer trip."
    )


def test_per_task_files_split_the_merged_file(built):
    merged = read_list(built / "llava_instruct.json")
    parts = [r for task in TASKS for r in read_list(built / f"{task}.json")]
    assert sorted(json.dumps(r) for r in parts) == sorted(json.dumps(r) for r in merged)
    for task in TASKS:
        assert {r["task"] for r in read_list(built / f"{task}.json")} <= {task}


def test_flags_are_carried_in_records(built):
    by_id = {r["custom_id"]: r for r in read_list(built / "llava_instruct.json")}
    assert by_id["coco-37666-conversation"]["flags"] == [
        "unseen_category:car",
        "coordinates_in_answer",
    ]
    assert by_id["coco-63217-detail"]["flags"] == ["refusal"]
    assert by_id["coco-790-detail"]["flags"] == []


def test_quarantine_lines_explain_each_rejection_with_the_raw_text(built):
    rows = {(r["custom_id"], r["reason"]): r for r in read_lines(built / "quarantine.jsonl")}
    for row in rows.values():
        assert list(row) == [
            "custom_id", "task", "image_id", "image_mode", "reason", "detail", "raw"
        ]  # fmt: skip
        assert row["detail"]
    cut = rows[("coco-37666-detail", "finish_length")]
    assert cut["raw"].startswith("A young boy in cold weather gear")
    assert (cut["task"], cut["image_id"], cut["image_mode"]) == ("detail", 37666, "none")
    failed = rows[("coco-54718-conversation", "failed_request")]
    assert "Rate limit reached" in failed["raw"]
    assert rows[("coco-70133-detail", "failed_request")]["detail"] == "no response"
    assert rows[("coco-70133-complex_reasoning", "duplicate")]["detail"].endswith("(line 17)")
    assert rows[("coco-63217-conversation", "system_echo")]["raw"].startswith("You are a visual")


def test_stats_json_counts_records_rejections_turns_and_words(built):
    stats = json.loads((built / "stats.json").read_text())
    assert stats["records"] == {"conversation": 3, "detail": 3, "complex_reasoning": 3, "total": 9}
    assert stats["quarantined"]["total"] == 11
    assert stats["quarantined"]["failed_request"] == 2
    assert stats["turns_per_conversation"]["count"] == 3
    assert stats["turns_per_conversation"]["p50"] == 3
    assert stats["words_per_answer"]["detail"]["count"] == 3
    assert stats["flags"] == {"unseen_category": 1, "coordinates_in_answer": 1, "refusal": 1}
    assert stats["unseen_categories"] == {"car": 1}
    assert stats["invariant"]["statement"] == (
        "records + quarantined = requests + unknown_responses + duplicate_responses"
    )


def test_same_seed_gives_identical_files_whatever_the_response_order(inputs, tmp_path):
    lines = inputs["responses"].read_text().splitlines(keepends=True)
    # reversed, except that the duplicate stays after the response it repeats
    answered_twice = [x for x in lines if "coco-70133-complex" in x]
    others = [x for x in lines if "coco-70133-complex" not in x]
    (tmp_path / "rev.jsonl").write_text("".join(others[::-1] + answered_twice))
    build(*inputs.values(), tmp_path / "a", seed=3)
    build(tmp_path / "rev.jsonl", inputs["requests"], inputs["contexts"], tmp_path / "b", seed=3)
    name = "llava_instruct.json"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_another_seed_shuffles_differently(inputs, tmp_path):
    build(*inputs.values(), tmp_path / "a", seed=1)
    build(*inputs.values(), tmp_path / "b", seed=2)
    ids = [[r["custom_id"] for r in read_list(tmp_path / d / "llava_instruct.json")] for d in "ab"]
    assert ids[0] != ids[1] and sorted(ids[0]) == sorted(ids[1])


def test_request_without_context_is_an_input_error_and_writes_nothing(inputs, tmp_path):
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text("".join(inputs["contexts"].read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(InputError, match=r"coco-790-\w+: image 790 is not in"):
        build(inputs["responses"], inputs["requests"], contexts, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_custom_id_in_requests_names_file_and_line(inputs, tmp_path):
    requests = tmp_path / "requests.jsonl"
    shutil.copy(inputs["requests"], requests)
    with requests.open("a") as f:
        f.write(json.dumps({"custom_id": "img-1", "body": {"messages": []}}) + "\n")
    with pytest.raises(InputError, match=r"requests.jsonl:19: custom_id 'img-1'"):
        build(inputs["responses"], requests, inputs["contexts"], tmp_path / "out")


def test_response_line_without_custom_id_keeps_previous_outputs(inputs, tmp_path):
    out = tmp_path / "out"
    build(*inputs.values(), out)
    before = (out / "quarantine.jsonl").read_bytes()
    responses = tmp_path / "responses.jsonl"
    responses.write_text(inputs["responses"].read_text() + '{"response": null}\n')
    with pytest.raises(InputError, match=r"responses.jsonl:20: no custom_id"):
        build(responses, inputs["requests"], inputs["contexts"], out)
    assert (out / "quarantine.jsonl").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_failure_while_merging_leaves_every_previous_output_untouched(inputs, tmp_path):
    out = tmp_path / "out"
    build(*inputs.values(), out, seed=1)
    (out / "llava_instruct.json").unlink()
    (out / "llava_instruct.json").mkdir()  # the merged file cannot be moved into place
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    template = tmp_path / "template.jsonl"
    write_template_responses(inputs["requests"], template)
    with pytest.raises(OSError):
        build(template, inputs["requests"], inputs["contexts"], out, seed=2)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert sorted(before) == sorted(
        [f"{t}.json" for t in TASKS] + ["quarantine.jsonl", "chair.json", "stats.json"]
    )


def test_stats_json_counts_response_lines_per_model(built):
    stats = json.loads((built / "stats.json").read_text())
    assert stats["models"] == {"gpt-4o-2024-08-06": 18}


def test_records_written_by_a_model_carry_no_backend_label(built):
    assert not [r for r in read_list(built / "llava_instruct.json") if "backend" in r]


def test_repeated_image_id_in_contexts_names_both_lines(inputs, tmp_path):
    contexts = tmp_path / "contexts.jsonl"
    lines = inputs["contexts"].read_text().splitlines(keepends=True)
    contexts.write_text("".join(lines + lines[:1]))
    with pytest.raises(InputError, match=r"contexts.jsonl:7: image_id 790 .*contexts.jsonl:1"):
        load_contexts(contexts)


def test_request_message_that_is_not_an_object_names_file_and_line(inputs, tmp_path):
    requests = tmp_path / "requests.jsonl"
    shutil.copy(inputs["requests"], requests)
    with requests.open("a") as f:
        f.write(json.dumps({"custom_id": "coco-1-detail", "body": {"messages": ["hi"]}}) + "\n")
    with pytest.raises(InputError, match=r"requests.jsonl:19: coco-1-detail: body.messages\[0\]"):
        load_requests(requests)


def test_system_prompt_parts_are_separate_sentences_for_echo_checks(tmp_path):
    parts = [
        {"type": "text", "text": "Role: visual assistant"},
        {"type": "text", "text": "Describe what you see in the image in rich detail for a reader."},
    ]
    request = {
        "custom_id": "coco-1-detail",
        "body": {"messages": [{"role": "system", "content": parts}]},
    }
    (tmp_path / "requests.jsonl").write_text(json.dumps(request) + "\n")
    fragments = load_requests(tmp_path / "requests.jsonl").fragments[0]
    assert "describe what you see in the image in rich detail" in fragments


def test_malformed_stats_json_is_an_input_error_naming_it(tmp_path):
    (tmp_path / "stats.json").write_text('{"records": {}}\n')
    with pytest.raises(InputError, match=r"stats.json: not a stats.json written by"):
        read_stats_report(tmp_path)


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instructgen.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_build_and_stats_commands_print_the_tables(inputs, tmp_path):
    out = tmp_path / "out"
    args = ["--requests", str(inputs["requests"]), "--contexts", str(inputs["contexts"])]
    done = cli("build", str(inputs["responses"]), *args, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "invariant holds: 9 records + 11 quarantined = 18 requests" in done.stdout
    shown = cli("stats", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "system_echo" in shown.stdout and "coordinates_in_answer" in shown.stdout


def test_build_command_reports_bad_input_in_one_line(inputs, tmp_path):
    args = ["--requests", str(inputs["requests"]), "--contexts", str(tmp_path / "missing.jsonl")]
    done = cli("build", str(inputs["responses"]), *args, "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "missing.jsonl: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_stats_command_reports_a_malformed_stats_json_in_one_line(tmp_path):
    (tmp_path / "stats.json").write_text('{"records": {"detail": 1}}\n')
    done = cli("stats", str(tmp_path / "stats.json"))
    assert done.returncode == 1
    assert "not a stats.json written by `instructgen build`" in done.stderr
    assert "Traceback" not in done.stderr


def test_text_only_requests_make_records_of_image_mode_none(built):
    stats = json.loads((built / "stats.json").read_text())
    assert stats["records_per_image_mode"] == {"none": 9, "url": 0, "inline": 0}
    assert {r["image_mode"] for r in read_list(built / "llava_instruct.json")} == {"none"}
