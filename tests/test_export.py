"""`instructgen export`: real LLaVA records and COCO images -> HF dataset folder / LLaMA-Factory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from instructgen.client.journal import Journal, Outcome  # noqa: E402
from instructgen.curate import export as export_module  # noqa: E402
from instructgen.curate.export import (  # noqa: E402
    TRAIN,
    VALIDATION,
    export,
    iter_json_array,
    message_parts,
)
from instructgen.curate.export_card import read_provenance  # noqa: E402
from instructgen.curate.export_hf import HfWriter  # noqa: E402
from instructgen.curate.export_llamafactory import LlamaFactoryWriter  # noqa: E402
from instructgen.errors import InputError  # noqa: E402
from instructgen.generate.exclude import read_exclusions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def records(test_data: Path) -> list[dict]:
    return json.loads((test_data / "train_instruct.json").read_text())


def write_data(tmp_path: Path, rows: list[dict], name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(rows, indent=1))
    return path


def export_hf(data, images, out, provenance=None, shard_mb=500.0, **kw):
    provenance = provenance or read_provenance(data)
    writer = lambda folder: HfWriter(folder, provenance, "cc-by-4.0", str(out), shard_mb)  # noqa: E731
    return export(data, out, writer, images, **kw)


def load(out: Path, tmp_path: Path, split: str = TRAIN, decode: bool = True):
    ds = datasets.load_dataset(str(out), split=split, cache_dir=str(tmp_path / "hf-cache"))
    if not decode:
        ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    return ds


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# --- the Hugging Face folder ----------------------------------------------------------------


def test_load_dataset_reads_the_export_of_a_real_build(test_data, tmp_path):
    out = tmp_path / "hf"
    export_hf(test_data / "train_instruct.json", test_data / "train_images", out)
    ds = load(out, tmp_path)
    source = records(test_data)
    assert ds.num_rows == len(source)
    assert ds["id"] == [r["id"] for r in source]  # order of rows kept
    row = ds[0]
    assert row["images"][0].size == (640, 426)  # a real decoded COCO photograph
    first = source[0]["conversations"]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * (len(first) // 2)
    assert row["messages"][1]["content"] == [{"type": "text", "text": first[1]["value"]}]


def test_embedded_image_bytes_are_the_source_files(test_data, tmp_path):
    out = tmp_path / "hf"
    export_hf(test_data / "train_instruct.json", test_data / "train_images", out)
    for row in load(out, tmp_path, decode=False):
        (image,) = row["images"]
        assert image["bytes"] == (test_data / "train_images" / image["path"]).read_bytes()


def test_image_part_stands_where_the_token_stood():
    assert message_parts("<image>\nWhat is this?") == [
        {"type": "image", "text": None},
        {"type": "text", "text": "What is this?"},
    ]
    assert message_parts("Describe the image in detail.\n<image>") == [
        {"type": "text", "text": "Describe the image in detail."},
        {"type": "image", "text": None},
    ]
    assert message_parts("A plain turn\nwith two lines") == [
        {"type": "text", "text": "A plain turn\nwith two lines"}
    ]


def test_token_at_the_end_of_a_turn_puts_the_image_last(test_data, tmp_path):
    out = tmp_path / "hf"
    export_hf(test_data / "train_instruct.json", test_data / "train_images", out)
    detail = next(
        r for r in load(out, tmp_path) if r["messages"][0]["content"][-1]["type"] == "image"
    )
    assert detail["messages"][0]["content"][0] == {
        "type": "text",
        "text": "Describe the image in detail.",
    }


def test_text_only_records_have_no_images(test_data, tmp_path):
    rows = records(test_data)[:2]
    text_only = json.loads(json.dumps(rows[0]))
    del text_only["image"]
    text_only["id"] = "text-only"
    text_only["conversations"][0]["value"] = "What is a snowboard?"
    data = write_data(tmp_path, [rows[0], text_only, rows[1]])
    out = tmp_path / "hf"
    summary = export_hf(data, test_data / "train_images", out)
    ds = load(out, tmp_path)
    assert [len(r["images"]) for r in ds] == [1, 0, 1]
    assert ds[1]["messages"][0]["content"] == [{"type": "text", "text": "What is a snowboard?"}]
    assert summary.images == 2


def test_card_names_the_coco_license_only_for_coco_photographs(test_data, tmp_path):
    rows = records(test_data)[:2]
    images = tmp_path / "images"
    (images / "00044").mkdir(parents=True)
    for row in rows:
        shutil.copy(test_data / "train_images" / row["image"], images / row["image"])
    shutil.copy(images / rows[1]["image"], images / "00044" / "000441147.jpg")
    rows[1]["image"] = "00044/000441147.jpg"  # LCS-558K's naming: not a COCO file
    out = tmp_path / "hf"
    summary = export_hf(write_data(tmp_path, rows), images, out)
    card = (out / "README.md").read_text()
    assert (summary.images, summary.coco_images) == (2, 1)
    assert "COCO images:" in card and "Other images (1 rows)" in card


def test_a_small_shard_limit_splits_rows_over_named_shards(test_data, tmp_path):
    out = tmp_path / "hf"
    # about 0.16 MB: two or three of the 40-100 KB photographs per shard
    summary = export_hf(
        test_data / "train_instruct.json", test_data / "train_images", out, shard_mb=0.16
    )
    shards = sorted(p.name for p in (out / "data").iterdir())
    n = len(shards)
    assert n >= 3
    assert shards == [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    limit = 0.16 * 1024 * 1024
    import pyarrow.parquet as pq

    for shard in shards:
        table = pq.read_table(out / "data" / shard)
        image_bytes = sum(
            len(i["bytes"]) for row in table.column("images").to_pylist() for i in row
        )
        assert table.num_rows == 1 or image_bytes <= limit  # one big row may stand alone
    assert load(out, tmp_path)["id"] == [r["id"] for r in records(test_data)]
    assert summary.files[:n] == [f"data/{s}" for s in shards]


def test_card_front_matter_parses_and_names_the_data_files(test_data, tmp_path):
    out = tmp_path / "hf"
    export_hf(
        test_data / "train_instruct.json",
        test_data / "train_images",
        out,
        val_fraction=0.5,
        seed=3,
    )
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "cc-by-4.0"
    assert meta["size_categories"] == ["n<1K"]
    assert "image-text-to-text" in meta["task_categories"]
    files = meta["configs"][0]["data_files"]
    assert files == [
        {"split": TRAIN, "path": "data/train-*"},
        {"split": VALIDATION, "path": "data/validation-*"},
    ]
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert sum(splits.values()) == 12 and f"{sum(splits.values())} rows" in card
    assert "CC BY 4.0" in card and "load_dataset(" in card and "SFTTrainer" in card


def test_card_gives_teacher_prompts_cost_and_quarantine_from_the_run(test_data, tmp_path):
    requests = test_data / "build_requests.jsonl"
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.sync([(r["custom_id"], n, "sha") for n, r in enumerate(lines, 1)], False)
        for r in lines[:2]:
            body = {"model": "gpt-4o-2024-08-06", "choices": []}
            journal.finish(
                r["custom_id"], Outcome("done", 200, body, "stop", 1000, 200, 0, cost_usd=0.0045)
            )
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    data = write_data(build_dir, records(test_data), "llava_instruct.json")
    (build_dir / "stats.json").write_text(json.dumps({"quarantined": {"total": 7}}))
    provenance = read_provenance(data, requests, tmp_path / "journal.sqlite")
    out = tmp_path / "hf"
    export_hf(data, test_data / "train_images", out, provenance)
    card = (out / "README.md").read_text()
    assert f"gpt-4o {len(lines)}" in card  # teacher named in the requests
    assert "gpt-4o-2024-08-06 2" in card  # what the journal says answered
    assert "$0.01 for 2000 prompt and 400 completion tokens" in card
    assert "Quarantined: 7 responses" in card
    assert f"prefixes over {len(lines)} requests" in card
    # the same prompts give the same hash; another system prompt gives another
    edited = tmp_path / "edited.jsonl"
    lines[0]["body"]["messages"][0]["content"] += " Be brief."
    edited.write_text("\n".join(json.dumps(r) for r in lines))
    again = read_provenance(data, requests)
    assert again.prompts_sha256 == provenance.prompts_sha256
    assert read_provenance(data, edited).prompts_sha256 != provenance.prompts_sha256


def test_validation_split_keeps_each_image_on_one_side(test_data, tmp_path):
    out = tmp_path / "hf"
    summary = export_hf(
        test_data / "train_instruct.json", test_data / "train_images", out, val_fraction=0.5, seed=3
    )
    train = {r["images"][0]["path"] for r in load(out, tmp_path, TRAIN, decode=False)}
    val = {r["images"][0]["path"] for r in load(out, tmp_path, VALIDATION, decode=False)}
    assert train and val and not train & val
    assert summary.rows[TRAIN] + summary.rows[VALIDATION] == 12
    again = export_hf(
        test_data / "train_instruct.json",
        test_data / "train_images",
        tmp_path / "again",
        val_fraction=0.5,
        seed=3,
    )
    assert again.rows == summary.rows  # same seed, same split


# --- LLaMA-Factory ---------------------------------------------------------------------------


def check_like_llamafactory(out: Path) -> list[dict]:
    """Load OUT as LLaMA-Factory's documented sharegpt loader does and check every row."""
    info = json.loads((out / "dataset_info.json").read_text())
    rows = []
    for entry in info.values():
        assert entry["formatting"] == "sharegpt"
        columns, tags = entry["columns"], entry["tags"]
        assert tags == {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        }
        for row in json.loads((out / entry["file_name"]).read_text()):
            messages, images = row[columns["messages"]], row[columns["images"]]
            roles = [m[tags["role_tag"]] for m in messages]
            assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(messages) // 2)
            text = "".join(m[tags["content_tag"]] for m in messages)
            assert text.count("<image>") == len(images)
            # media_dir defaults to dataset_dir, which is OUT
            assert all(os.path.isfile(os.path.join(out, image)) for image in images)
            rows.append(row)
    return rows


def test_llamafactory_export_follows_its_documented_schema(test_data, tmp_path):
    out = tmp_path / "lf"
    export(
        test_data / "train_instruct.json",
        out,
        lambda folder: LlamaFactoryWriter(folder, "coco_instruct"),
        test_data / "train_images",
        val_fraction=0.5,
        seed=3,
    )
    rows = check_like_llamafactory(out)
    assert len(rows) == 12
    assert set(json.loads((out / "dataset_info.json").read_text())) == {
        "coco_instruct",
        "coco_instruct_validation",
    }
    turns = sorted(tuple(m["content"] for m in r["messages"]) for r in rows)
    source = sorted(tuple(t["value"] for t in r["conversations"]) for r in records(test_data))
    assert turns == source  # every turn as written, <image> where it stood
    linked = out / "images" / "000000183872.jpg"
    assert linked.read_bytes() == (test_data / "train_images" / "000000183872.jpg").read_bytes()


# --- exclusion on finished data ---------------------------------------------------------------


def test_export_exclude_drops_records_of_named_images_and_counts_them(test_data, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        json.dumps({"question_id": 0, "image": "COCO_val2014_000000183872.jpg", "text": "?"}) + "\n"
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("70133\n")
    out = tmp_path / "hf"
    summary = export_hf(
        test_data / "train_instruct.json",
        test_data / "train_images",
        out,
        exclusions=read_exclusions([questions, ids]),
    )
    assert summary.excluded == {questions: 3, ids: 3}
    kept = {r["images"][0]["path"] for r in load(out, tmp_path, decode=False)}
    assert kept == {"000000030752.jpg", "000000419474.jpg"}
    assert "6 records dropped" in (out / "README.md").read_text()


# --- bad input: one red line, nothing half-written -----------------------------------------


def assert_nothing_written(tmp_path: Path, out: Path, before: set[str]) -> None:
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == before  # no temp folder left


def test_missing_image_is_an_error_naming_the_record(test_data, tmp_path):
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=r"record 9 \(id 000000419474\): image .* not found"):
        export_hf(test_data / "train_instruct.json", test_data / "review_images", tmp_path / "o")
    assert_nothing_written(tmp_path, tmp_path / "o", before)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["conversations"][2].update(value="<image>\nAgain?"), "2 <image> tokens"),
        (lambda r: r["conversations"][0].update(value="No token here"), "0 <image> tokens"),
        (lambda r: r.pop("image"), "1 <image> tokens, but the record has no image"),
        (lambda r: r["conversations"][1].update({"from": "human"}), "must be a gpt turn"),
        (lambda r: r["conversations"].pop(), "ends with a human turn"),
        (lambda r: r["conversations"][1].update(value=" \n"), r"\[1\]: an empty gpt turn"),
    ],
)
def test_a_record_a_trainer_would_trip_on_is_an_error(test_data, tmp_path, edit, message):
    rows = records(test_data)
    edit(rows[3])
    data = write_data(tmp_path, rows)
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=rf"record 3 \(id {rows[3]['id']}\): .*{message}"):
        export_hf(data, test_data / "train_images", tmp_path / "o")
    assert_nothing_written(tmp_path, tmp_path / "o", before)


def test_records_cut_by_the_read_chunk_are_read_whole(test_data, monkeypatch):
    monkeypatch.setattr(export_module, "READ_CHUNK", 7)  # cuts strings, keys and numbers
    items = [item for _, item, _ in iter_json_array(test_data / "train_instruct.json")]
    assert items == records(test_data)


def test_a_broken_record_fails_at_once_naming_it(test_data, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "READ_CHUNK", 4096)
    rows = records(test_data)
    text = json.dumps(rows[:2], indent=1).replace('"id":', '"id"', 1)  # record 0 is broken
    broken = text[:-1] + "," + json.dumps(rows[2:], indent=1)[1:]
    data = tmp_path / "data.json"
    # the bytes after the first chunks are not UTF-8: reading on to them would fail otherwise
    data.write_bytes(broken.encode() + b" " * 65536 + b"\xff\xfe]")
    with pytest.raises(
        InputError, match=r"data.json:3: invalid LLaVA JSON: record 0: Expecting ':'"
    ):
        list(iter_json_array(data))


def test_absolute_image_paths_that_exist_need_no_images_folder(test_data, tmp_path):
    rows = records(test_data)[:3]
    for row in rows:
        row["image"] = str(test_data / "train_images" / row["image"])
    data = write_data(tmp_path, rows)
    summary = export_hf(data, None, tmp_path / "hf")
    assert summary.images == 3
    source = (test_data / "train_images" / "000000183872.jpg").read_bytes()
    assert load(tmp_path / "hf", tmp_path, decode=False)[0]["images"][0]["bytes"] == source
    out = tmp_path / "lf"
    export(data, out, lambda folder: LlamaFactoryWriter(folder, "abs"))
    assert [r["images"] for r in check_like_llamafactory(out)] == [[r["image"]] for r in rows]
    assert not (out / "images").exists()  # named where they are, not copied


def test_a_val_fraction_that_leaves_train_empty_is_refused(test_data, tmp_path):
    data = write_data(tmp_path, records(test_data)[:3])  # one image: all on one side
    before = {p.name for p in tmp_path.iterdir()}
    seed = next(s for s in range(100) if export_module.image_split("coco:183872", 0.5, s) != TRAIN)
    with pytest.raises(InputError, match=r"--val-fraction 0.5: all 3 records went to validation"):
        export_hf(data, test_data / "train_images", tmp_path / "o", val_fraction=0.5, seed=seed)
    assert_nothing_written(tmp_path, tmp_path / "o", before)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "instructgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_non_empty_output_folder_is_one_red_line_and_left_alone(test_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    data = str(test_data / "train_instruct.json")
    result = run_cli("export", data, "--images", str(test_data / "train_images"), "-o", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {out}: exists and is not an empty folder; choose a new -o folder"
    ]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_writes_llamafactory_files_and_reports_exclusions(test_data, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("000000419474.jpg\n")
    pope = tmp_path / "pope_random.jsonl"
    pope.write_text(json.dumps({"question_id": 1, "image": "COCO_val2014_000000070133.jpg"}))
    out = tmp_path / "lf"
    images = str(test_data / "train_images")
    data = str(test_data / "train_instruct.json")
    result = run_cli(
        "export", data, "--exclude", str(ids), str(pope), "--images", images, "-o", str(out),
        "--format", "llamafactory",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"excluded 3 records whose image is named in {ids}" in result.stderr
    assert f"excluded 3 records whose image is named in {pope}" in result.stderr
    assert len(check_like_llamafactory(out)) == 6
    assert set(json.loads((out / "dataset_info.json").read_text())) == {"train_instruct"}


def test_nothing_left_to_export_is_an_error_not_an_unloadable_folder(test_data, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("183872\n70133\n30752\n419474\n")
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="nothing to export \\(all 12 were excluded\\)"):
        export_hf(
            test_data / "train_instruct.json",
            test_data / "train_images",
            tmp_path / "o",
            exclusions=read_exclusions([ids]),
        )
    assert_nothing_written(tmp_path, tmp_path / "o", before)
