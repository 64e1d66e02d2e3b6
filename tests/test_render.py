"""Prompts, seeds and `instructgen render` / `instructgen estimate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instructgen.contracts import TASKS, ImageContext
from instructgen.errors import InputError, TemplateError
from instructgen.files import iter_jsonl
from instructgen.generate.coco import write_contexts
from instructgen.generate.prompts import DEFAULT_PROMPTS, DEFAULT_SEEDS, load_task_prompt
from instructgen.generate.render import estimate_requests, render_requests
from instructgen.tokens import TokenCounter


@pytest.fixture
def contexts(test_data, tmp_path) -> Path:
    out = tmp_path / "contexts.jsonl"
    write_contexts(
        test_data / "coco_captions_train2017_3.json",
        out,
        test_data / "coco_instances_train2017_3.json",
    )
    return out


@pytest.fixture
def requests(contexts, tmp_path) -> Path:
    out = tmp_path / "requests.jsonl"
    render_requests(contexts, out)
    return out


def test_every_task_has_a_system_prompt_and_at_least_two_seeds():
    for task in TASKS:
        prompt = load_task_prompt(task)
        assert len(prompt.system) > 200
        assert len(prompt.seeds) >= 2


def test_instruction_lists_have_at_least_ten_phrasings():
    for name in ("detail.txt", "brief.txt"):
        lines = [
            x
            for x in (DEFAULT_PROMPTS / "instructions" / name).read_text().splitlines()
            if x.strip()
        ]
        assert len(lines) >= 10 and len(set(lines)) == len(lines)


def test_seed_responses_follow_the_format_the_prompts_ask_for():
    for task in ("conversation", "complex_reasoning"):
        for seed in load_task_prompt(task).seeds:
            heads = [line.split(":", 1)[0] for line in seed.assistant.splitlines() if line.strip()]
            assert heads[0] == "Question" and heads.count("Question") == heads.count("Answer")
            assert "Question:" in load_task_prompt(task).system
    for seed in load_task_prompt("detail").seeds:
        assert "Question:" not in seed.assistant and len(seed.assistant.split()) >= 80


def test_requests_have_one_line_per_image_and_task_with_stable_ids(requests):
    lines = [obj for _, obj in iter_jsonl(requests)]
    ids = [obj["custom_id"] for obj in lines]
    assert len(ids) == 3 * 3 and len(set(ids)) == len(ids)
    assert "coco-69468-conversation" in ids and "coco-535506-complex_reasoning" in ids
    for obj in lines:
        assert obj["method"] == "POST" and obj["url"] == "/v1/chat/completions"
        assert obj["body"]["model"] == "gpt-4o" and obj["body"]["max_tokens"] == 1024


def test_messages_are_system_then_seed_pairs_then_the_real_context(requests, contexts):
    prompt = load_task_prompt("detail")
    ctx = next(
        ImageContext.from_json(o) for _, o in iter_jsonl(contexts) if o["image_id"] == 442450
    )
    body = next(
        o["body"] for _, o in iter_jsonl(requests) if o["custom_id"] == "coco-442450-detail"
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * len(prompt.seeds) + ["user"]
    assert body["messages"] == prompt.messages(ctx)
    assert (
        "Frisbee" in body["messages"][-1]["content"]
        and "frisbee: [" in body["messages"][-1]["content"]
    )


def test_prefix_is_identical_across_requests_of_a_task(requests):
    prefixes = {
        json.dumps(o["body"]["messages"][:-1])
        for _, o in iter_jsonl(requests)
        if o["custom_id"].endswith("-conversation")
    }
    assert len(prefixes) == 1


def test_only_the_chosen_tasks_are_rendered(contexts, tmp_path):
    out = tmp_path / "r.jsonl"
    summary = render_requests(contexts, out, tasks=("detail",), model="gpt-4o-mini", max_tokens=300)
    bodies = [o for _, o in iter_jsonl(out)]
    assert summary.requests == 3 and all(o["custom_id"].endswith("-detail") for o in bodies)
    assert all(
        o["body"]["model"] == "gpt-4o-mini" and o["body"]["max_tokens"] == 300 for o in bodies
    )


def copy_prompts(tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS, dst)
    return dst


def test_template_naming_a_missing_field_fails_with_file_and_line(contexts, tmp_path):
    prompts = copy_prompts(tmp_path)
    (prompts / "context.j2").write_text("Captions:\n{{ captions }}\nPlace: {{ location }}\n")
    with pytest.raises(TemplateError, match=r"context\.j2:3: 'location' is undefined"):
        render_requests(contexts, tmp_path / "r.jsonl", prompts_dir=prompts)
    assert not (tmp_path / "r.jsonl").exists()


def test_template_syntax_error_names_file_and_line(contexts, tmp_path):
    prompts = copy_prompts(tmp_path)
    (prompts / "detail" / "system.j2").write_text("Describe.\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"detail/system\.j2:2: template syntax error"):
        render_requests(contexts, tmp_path / "r.jsonl", prompts_dir=prompts)


def test_llava_prompt_folder_layout_is_accepted(contexts, tmp_path):
    prompts = tmp_path / "llava_prompts"
    folder = prompts / "conversation"
    folder.mkdir(parents=True)
    (folder / "system_message.txt").write_text("You write conversations about images.\n")
    (folder / "000_caps.txt").write_text("A dog on a beach.\n\ndog: [0.1, 0.2, 0.5, 0.9]\n")
    (folder / "000_conv.txt").write_text("Question: What animal is there?\nAnswer: A dog.\n")
    out = tmp_path / "r.jsonl"
    render_requests(contexts, out, tasks=("conversation",), prompts_dir=prompts)
    messages = next(iter_jsonl(out))[1]["body"]["messages"]
    assert messages[0]["content"] == "You write conversations about images."
    assert messages[1]["content"].startswith("A dog on a beach.")
    assert messages[2]["content"] == "Question: What animal is there?\nAnswer: A dog."
    assert messages[3]["content"].startswith("Captions:")


def test_duplicate_image_in_contexts_is_an_error_naming_both_lines(contexts, tmp_path):
    doubled = tmp_path / "doubled.jsonl"
    first = contexts.read_text().splitlines()[0]
    doubled.write_text(first + "\n" + first + "\n")
    with pytest.raises(InputError, match=r"doubled\.jsonl:2: image \d+ already on line 1"):
        render_requests(doubled, tmp_path / "r.jsonl")


def test_estimate_counts_prompt_tokens_and_prices_both_ways(requests):
    est = estimate_requests(requests)
    counter = TokenCounter("gpt-4o")
    expected = sum(counter.count_messages(o["body"]["messages"]) for _, o in iter_jsonl(requests))
    assert est.total.prompt_tokens == expected and est.total.requests == 9
    assert [r.task for r in est.rows] == list(TASKS)
    assert est.total.cost_batch == pytest.approx(est.total.cost_standard / 2)
    assert 0 < est.total.completion_tokens <= 9 * 1024


def test_estimate_of_an_unpriced_model_says_unknown(requests):
    est = estimate_requests(requests, model="my-local-llama")
    assert est.total.cost_standard is None and est.total.prompt_tokens > 0


def test_cli_render_then_estimate(contexts, tmp_path):
    out = tmp_path / "requests.jsonl"
    cli = [sys.executable, "-m", "instructgen.cli"]
    r = subprocess.run(
        [*cli, "render", str(contexts), "-o", str(out), "--tasks", "conversation,detail"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "6 requests from 3 contexts" in r.stderr
    r = subprocess.run([*cli, "estimate", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "total" in r.stdout and "batch" in r.stdout


def test_bundled_seeds_are_real_train2017_images():
    for path in DEFAULT_SEEDS.glob("*/*.yaml"):
        text = path.read_text()
        assert "train2017" in text.splitlines()[0], path


def test_seed_responses_parse_into_turns_without_flags():
    from instructgen.curate.parse import Rejection, answer_flags, parse_response, present_categories

    for task in TASKS:
        prompt = load_task_prompt(task)
        for seed in prompt.seeds:
            turns = parse_response(task, seed.assistant)
            assert not isinstance(turns, Rejection), (seed.source, turns)
            assert len(turns) >= (3 if task == "conversation" else 1)
            categories = {
                line.split(":")[0][2:] for line in seed.user.splitlines() if ": [" in line
            }
            captions = tuple(line[2:] for line in seed.user.splitlines() if line.startswith("- "))
            present = present_categories(captions, categories)
            assert answer_flags(task, turns, present) == [], seed.source


def test_missing_seeds_folder_is_an_error_not_a_silent_zero_shot(contexts, tmp_path):
    with pytest.raises(InputError, match="no seeds folder for task 'conversation'"):
        render_requests(contexts, tmp_path / "r.jsonl", seeds_dir=tmp_path / "nope")
    assert not (tmp_path / "r.jsonl").exists()


def test_empty_seeds_folder_renders_without_examples(contexts, tmp_path):
    (tmp_path / "seeds" / "detail").mkdir(parents=True)
    out = tmp_path / "r.jsonl"
    render_requests(contexts, out, tasks=("detail",), seeds_dir=tmp_path / "seeds")
    assert [m["role"] for m in next(iter_jsonl(out))[1]["body"]["messages"]] == ["system", "user"]


def test_a_task_named_twice_is_rendered_once(contexts, tmp_path):
    summary = render_requests(contexts, tmp_path / "r.jsonl", tasks=("detail", "detail"))
    assert summary.requests == 3


def test_llava_layout_file_that_is_not_utf8_is_an_error(contexts, tmp_path):
    folder = tmp_path / "p" / "detail"
    folder.mkdir(parents=True)
    (folder / "system_message.txt").write_bytes(b"Describe \xff\xfe images.")
    with pytest.raises(InputError, match="system_message.txt: not UTF-8"):
        render_requests(
            contexts, tmp_path / "r.jsonl", tasks=("detail",), prompts_dir=tmp_path / "p"
        )


def test_estimate_rejects_a_message_that_is_not_an_object(tmp_path):
    bad = tmp_path / "requests.jsonl"
    bad.write_text(json.dumps({"custom_id": "x", "body": {"messages": ["hi"]}}) + "\n")
    with pytest.raises(InputError, match=r"requests\.jsonl:1: body\.messages must be a list"):
        estimate_requests(bad)


def test_cached_prefix_cost_counts_the_shared_prefix_as_cached(requests):
    est = estimate_requests(requests)
    counter = TokenCounter("gpt-4o")
    prefixes = [counter.count_messages(o["body"]["messages"][:-1]) for _, o in iter_jsonl(requests)]
    assert all(p >= 1024 for p in prefixes)  # our seeds make every prefix cacheable
    assert est.total.cached_tokens == sum(p - p % 128 for p in prefixes)
    assert est.total.cost_batch < est.total.cost_cached < est.total.cost_standard


def test_estimate_rejects_a_non_integer_max_tokens(tmp_path):
    bad = tmp_path / "requests.jsonl"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}
    bad.write_text(json.dumps({"custom_id": "x", "body": body}) + "\n")
    with pytest.raises(InputError, match=r"requests\.jsonl:1: max_tokens must be an integer"):
        estimate_requests(bad)
