"""Trainer data: records, templates, label masks, truncation and images (no model needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
pytest.importorskip("transformers", reason="needs the [train] extra: make install-train")

from PIL import Image  # noqa: E402
from train_tiny import TEMPLATE_TEXT, build_tokenizer  # noqa: E402

from instructgen.errors import InputError  # noqa: E402
from instructgen.train.data import (  # noqa: E402
    IGNORE,
    LlavaDataset,
    TrainRecord,
    Turn,
    collate,
    expand_to_square,
    parse_records,
    read_records,
    template_pieces,
    tokenize_pieces,
)
from instructgen.train.model import load_tokenizer  # noqa: E402

pytestmark = pytest.mark.train
IMAGE_ID = 10_000  # a token id no word has, easy to spot


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, test_data):
    """The tiny word-level tokenizer with `<image>` added, as the trainer loads it."""
    texts = [
        turn["value"]
        for name in ("train_pretrain.json", "train_instruct.json")
        for record in json.loads((test_data / name).read_text())
        for turn in record["conversations"]
    ]
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer([*texts, TEMPLATE_TEXT]).save_pretrained(folder)
    return load_tokenizer(str(folder))


def record(*turns: str, images=("a.jpg",)) -> TrainRecord:
    roles = ["human", "gpt"] * len(turns)
    return TrainRecord(
        "r1", tuple(images), tuple(Turn(r, t) for r, t in zip(roles, turns, strict=False))
    )


def labelled_text(example, tokenizer) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def test_instruct_records_with_extra_keys_are_read(test_data):
    records = read_records(test_data / "train_instruct.json", test_data / "train_images")
    assert len(records) == 12
    assert records[0].images == ("000000183872.jpg",)
    assert [t.role for t in records[0].turns] == ["human", "gpt", "human", "gpt"]


def test_missing_image_is_reported_with_record_id(tmp_path, test_data):
    raw = json.loads((test_data / "train_pretrain.json").read_text())
    raw[3]["image"] = "nowhere.jpg"
    path = tmp_path / "pretrain.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"nowhere\.jpg \(record id 000000183872-3\)"):
        read_records(path, test_data / "train_images")


def test_more_image_tokens_than_images_is_an_error_naming_the_record():
    raw = [
        {
            "id": "x7",
            "image": "a.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nand <image>?"},
                {"from": "gpt", "value": "one"},
            ],
        }
    ]
    with pytest.raises(InputError, match=r"record 0 \(id x7\): 2 <image> tokens but 1 image"):
        parse_records(raw, Path("d.json"))


def test_turns_out_of_order_are_an_error_naming_the_record():
    raw = [{"id": "q", "conversations": [{"from": "gpt", "value": "hi"}]}]
    with pytest.raises(InputError, match=r"\(id q\): turn 0 must be .*human"):
        parse_records(raw, Path("d.json"))


def test_record_with_an_image_but_no_token_gets_it_before_the_question():
    raw = [
        {
            "id": "n",
            "image": "a.jpg",
            "conversations": [
                {"from": "human", "value": "What is it?"},
                {"from": "gpt", "value": "A cat."},
            ],
        }
    ]
    assert parse_records(raw, Path("d.json"))[0].turns[0].text == "<image>\nWhat is it?"


def test_v1_labels_cover_only_the_assistant_answers_and_their_end_token(tokenizer):
    rec = record("<image>\nWhat does the picture show?", "a cat", "Can you say it?", "a dog")
    example = tokenize_pieces(template_pieces(rec, "v1"), tokenizer, IMAGE_ID, 4, 2048)
    assert labelled_text(example, tokenizer) == "a cat </s> a dog </s>"
    assert example.input_ids.count(IMAGE_ID) == 4
    pairs = zip(example.input_ids, example.labels, strict=True)
    assert all(label == IGNORE for token, label in pairs if token == IMAGE_ID)


def test_plain_template_is_the_image_then_the_caption(tokenizer):
    rec = record("Give a short description of this picture.\n<image>", "a cat")
    example = tokenize_pieces(template_pieces(rec, "plain"), tokenizer, IMAGE_ID, 4, 2048)
    body = example.input_ids[1:]  # after the start token
    assert body[:4] == [IMAGE_ID] * 4
    assert tokenizer.decode(body[4:]) == "a cat"
    assert labelled_text(example, tokenizer) == "a cat"


def test_plain_template_refuses_a_multi_turn_record():
    rec = record("<image>\nq", "a", "q2", "b")
    with pytest.raises(InputError, match="template plain takes one human/gpt exchange"):
        template_pieces(rec, "plain")


def test_truncation_inside_an_image_block_ends_before_it_and_drops_the_image(tokenizer):
    rec = record("What does the picture show? <image>", "a cat")
    pieces = template_pieces(rec, "v1")
    full = tokenize_pieces(pieces, tokenizer, IMAGE_ID, 8, 2048)
    start = full.input_ids.index(IMAGE_ID)
    cut = tokenize_pieces(pieces, tokenizer, IMAGE_ID, 8, start + 3)
    assert (full.n_images, cut.n_images) == (1, 0)
    assert cut.input_ids == full.input_ids[:start]


def test_truncation_after_an_image_block_keeps_the_image(tokenizer):
    rec = record("<image>\nWhat does the picture show?", "a cat")
    pieces = template_pieces(rec, "v1")
    full = tokenize_pieces(pieces, tokenizer, IMAGE_ID, 8, 2048)
    cut = tokenize_pieces(pieces, tokenizer, IMAGE_ID, 8, len(full.input_ids) - 2)
    assert cut.n_images == 1
    assert len(cut.input_ids) == len(cut.labels) == len(full.input_ids) - 2


def test_pad_to_square_keeps_the_whole_image_on_the_fill_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand_to_square(image, (1, 2, 3))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (1, 2, 3)
    assert square.getpixel((20, 20)) == (255, 0, 0)


def test_batches_are_right_padded_with_pixels_in_record_order(tokenizer, test_data):
    from transformers import CLIPImageProcessor

    records = read_records(test_data / "train_pretrain.json", test_data / "train_images")
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    dataset = LlavaDataset(
        records[:3],
        test_data / "train_images",
        tokenizer,
        processor,
        template="plain",
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tokens_per_image=16,
        max_length=2048,
        pad_to_square=True,
    )
    items = [dataset[i] for i in range(3)]
    batch = collate(items, pad_token_id=tokenizer.pad_token_id)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def test_train_without_the_extra_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; sys.argv = ['instructgen', 'train', "
        "'--stage', '1', '--data', 'x', '--images', 'y', '-o', 'z']; "
        "from instructgen.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install -e '.[train]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_data_file_for_the_other_stage_is_one_line_before_any_model_loads(tmp_path, test_data):
    # stage 1's plain template takes one exchange; train_instruct.json has dialogues. The towers
    # do not exist: the data must be refused before they are looked for.
    args = ["train", "--stage", "1", "--data", str(test_data / "train_instruct.json")]
    args += ["--images", str(test_data / "train_images"), "-o", str(tmp_path / "out")]
    args += ["--vision", str(tmp_path / "no-vision"), "--llm", str(tmp_path / "no-llm")]
    argv = ["instructgen", *args]
    code = f"import sys; sys.argv = {argv!r}; from instructgen.cli import main; main()"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "train_instruct.json: record id 000000183872: template plain takes one" in line
