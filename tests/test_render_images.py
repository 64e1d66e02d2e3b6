"""`render --image url|inline` on the real COCO train2017 sample, and the estimate of its images."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from instructgen.client import batch_api
from instructgen.client.runner import load_requests
from instructgen.contracts import TASKS
from instructgen.errors import InputError
from instructgen.files import iter_jsonl
from instructgen.generate.coco import write_contexts
from instructgen.generate.images import ImageInput
from instructgen.generate.prompts import load_task_prompt
from instructgen.generate.render import estimate_requests, image_totals, render_requests
from instructgen.tokens import TokenCounter

LIMIT = 4


@pytest.fixture(scope="module")
def coco_sample(test_data) -> Path:
    """Four real COCO train2017 images: their annotations and JPEGs."""
    return test_data / "coco_train2017"


@pytest.fixture
def contexts(coco_sample, tmp_path) -> Path:
    out = tmp_path / "contexts.jsonl"
    annotations = coco_sample / "annotations"
    write_contexts(
        annotations / "captions_train2017.json",
        out,
        annotations / "instances_train2017.json",
        limit=LIMIT,
    )
    return out


def rendered(contexts: Path, image: ImageInput | None, model: str = "gpt-4o", **kw) -> list[dict]:
    out = contexts.parent / "requests.jsonl"
    render_requests(contexts, out, model=model, image=image, **kw)
    return [obj for _, obj in iter_jsonl(out)]


def last_user(request: dict) -> dict:
    return request["body"]["messages"][-1]


def image_parts(request: dict) -> list[dict]:
    return [
        part
        for m in request["body"]["messages"]
        if isinstance(m["content"], list)
        for part in m["content"]
        if part["type"] == "image_url"
    ]


def decoded(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_contexts_keep_the_coco_url_of_the_annotations(contexts):
    for _, obj in iter_jsonl(contexts):
        assert obj["coco_url"] == f"http://images.cocodataset.org/train2017/{obj['file_name']}"


def test_url_mode_sends_the_coco_url_once_in_the_last_user_message(contexts):
    urls = {o["image_id"]: o["coco_url"] for _, o in iter_jsonl(contexts)}
    for request in rendered(contexts, ImageInput("url", "low")):
        image_id = int(request["custom_id"].split("-")[1])
        parts = image_parts(request)
        assert parts == [
            {"type": "image_url", "image_url": {"url": urls[image_id], "detail": "low"}}
        ]
        image_part, text_part = last_user(request)["content"]
        assert image_part == parts[0] and text_part["text"].startswith("Captions:")


def test_a_base_url_is_joined_with_each_file_name(contexts):
    image = ImageInput("url", base_url="https://images.example.org/coco/train2017/")
    for request in rendered(contexts, image):
        url = image_parts(request)[0]["image_url"]["url"]
        assert url.startswith("https://images.example.org/coco/train2017/0000")
        assert url.endswith(".jpg") and "//0000" not in url


def test_inline_mode_sends_a_jpeg_no_larger_than_the_max_side(contexts, coco_sample):
    image = ImageInput("inline", images_dir=coco_sample / "train2017", max_side=320)
    requests = rendered(contexts, image)
    assert len(requests) == LIMIT * len(TASKS)
    for request in requests:
        (part,) = image_parts(request)
        img = decoded(part["image_url"]["url"])
        assert img.format == "JPEG" and max(img.size) == 320


def test_an_image_within_the_max_side_is_sent_byte_for_byte(contexts, coco_sample):
    request = rendered(contexts, ImageInput("inline", images_dir=coco_sample / "train2017"))[0]
    url = image_parts(request)[0]["image_url"]["url"]
    name = next(iter_jsonl(contexts))[1]["file_name"]
    assert base64.b64decode(url.split(",", 1)[1]) == (coco_sample / "train2017" / name).read_bytes()


def test_the_prefix_is_byte_identical_across_a_tasks_requests(contexts, coco_sample):
    image = ImageInput("inline", images_dir=coco_sample / "train2017")
    prefixes: dict[str, set[str]] = {}
    for request in rendered(contexts, image):
        task = request["custom_id"].split("-", 2)[2]
        prefixes.setdefault(task, set()).add(json.dumps(request["body"]["messages"][:-1]))
    assert sorted(prefixes) == sorted(TASKS) and all(len(p) == 1 for p in prefixes.values())


def test_seeds_are_the_same_in_both_modes_and_only_the_system_prompt_says_an_image_is_attached(
    contexts,
):
    text = {r["custom_id"]: r["body"]["messages"] for r in rendered(contexts, None)}
    url = {r["custom_id"]: r["body"]["messages"] for r in rendered(contexts, ImageInput("url"))}
    for cid, messages in text.items():
        assert messages[1:-1] == url[cid][1:-1]
        assert "attached" not in messages[0]["content"]
        assert "attached to the last message" in url[cid][0]["content"]
        assert messages[-1]["content"] == url[cid][-1]["content"][1]["text"]


def test_a_missing_image_file_is_an_error_listing_the_image_ids(contexts, coco_sample, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    first = next(iter_jsonl(contexts))[1]
    shutil.copy(coco_sample / "train2017" / first["file_name"], images)
    with pytest.raises(InputError) as e:
        rendered(contexts, ImageInput("inline", images_dir=images))
    others = [o["image_id"] for _, o in iter_jsonl(contexts)][1:]
    assert f"image ids {', '.join(map(str, others))} " in str(e.value)
    assert not (tmp_path / "requests.jsonl").exists()


def test_a_file_that_is_no_image_is_an_error_naming_it(contexts, coco_sample, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(coco_sample / "train2017", images)
    name = next(iter_jsonl(contexts))[1]["file_name"]
    (images / name).write_text("not a picture")
    with pytest.raises(InputError, match=f"{name}: not a readable image"):
        rendered(contexts, ImageInput("inline", images_dir=images))


def test_a_jpeg_cut_short_is_an_error_naming_it_not_a_request_the_api_rejects(
    contexts, coco_sample, tmp_path
):
    images = tmp_path / "images"
    shutil.copytree(coco_sample / "train2017", images)
    name = next(iter_jsonl(contexts))[1]["file_name"]
    whole = (images / name).read_bytes()
    (images / name).write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with pytest.raises(InputError, match=f"{name}: not a readable image"):
        rendered(contexts, ImageInput("inline", images_dir=images))
    assert not (tmp_path / "requests.jsonl").exists()


def test_an_image_over_pils_pixel_guard_is_an_error_naming_it(contexts, coco_sample, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # every COCO photo is over 2 x this
    name = next(iter_jsonl(contexts))[1]["file_name"]
    with pytest.raises(InputError, match=f"{name}: too large to decode safely"):
        rendered(contexts, ImageInput("inline", images_dir=coco_sample / "train2017"))
    assert not (contexts.parent / "requests.jsonl").exists()


def test_url_mode_without_coco_url_or_base_url_is_an_error_listing_the_image_ids(
    contexts, tmp_path
):
    lines = [json.loads(x) for x in contexts.read_text().splitlines()]
    del lines[1]["coco_url"]
    contexts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(InputError, match=f"no coco_url for image ids {lines[1]['image_id']};"):
        rendered(contexts, ImageInput("url"))
    assert rendered(contexts, ImageInput("url", base_url="https://example.org/"))


def test_an_image_with_a_model_that_takes_no_images_is_an_error(contexts):
    with pytest.raises(InputError, match="model gpt-4 takes no image input"):
        rendered(contexts, ImageInput("url"), model="gpt-4")


def test_the_estimate_counts_image_tokens_apart_from_text_tokens(contexts):
    requests = contexts.parent / "requests.jsonl"
    text = rendered(contexts, None)
    text_estimate = estimate_requests(requests)
    rendered(contexts, ImageInput("url", "high"))
    est = estimate_requests(requests, contexts_path=contexts)
    sizes = [(o["width"], o["height"]) for _, o in iter_jsonl(contexts)]
    per_image = sum(85 + 170 * -(-w // 512) * -(-h // 512) for w, h in sizes)
    assert est.total.images == len(text)
    assert est.total.image_tokens == per_image * len(TASKS)
    # text tokens: the same, but for the longer system prompt that mentions the image
    count = TokenCounter().count
    longer = sum(
        count(load_task_prompt(t, image_attached=True).system) - count(load_task_prompt(t).system)
        for t in TASKS
    )
    assert est.total.prompt_tokens == text_estimate.total.prompt_tokens + LIMIT * longer
    assert est.total.cost_standard > text_estimate.total.cost_standard


def test_low_detail_images_cost_85_tokens_each(contexts):
    requests = rendered(contexts, ImageInput("url", "low"))
    est = estimate_requests(contexts.parent / "requests.jsonl", contexts_path=contexts)
    assert est.total.image_tokens == 85 * len(requests)


def test_inline_images_are_measured_from_their_jpeg(contexts, coco_sample):
    image = ImageInput("inline", "high", images_dir=coco_sample / "train2017", max_side=500)
    requests = rendered(contexts, image)
    est = estimate_requests(contexts.parent / "requests.jsonl")
    assert est.total.image_tokens == (85 + 170) * len(requests)  # at most 500 px: one tile


def test_estimating_image_requests_as_a_text_only_model_is_an_error(contexts):
    rendered(contexts, ImageInput("url", "low"))
    with pytest.raises(InputError, match=r"requests.jsonl:1: .* gpt-4 takes no image input"):
        estimate_requests(contexts.parent / "requests.jsonl", model="gpt-4")


def test_low_detail_url_images_need_no_contexts_to_be_counted(contexts):
    requests = rendered(contexts, ImageInput("url", "low"))
    est = estimate_requests(contexts.parent / "requests.jsonl")  # no pixel sizes at hand
    assert est.total.image_tokens == 85 * len(requests)
    assert est.total.cost_standard is not None


def test_url_images_without_their_contexts_have_unknown_tokens_and_cost(contexts):
    rendered(contexts, ImageInput("url"))
    est = estimate_requests(contexts.parent / "requests.jsonl")
    assert est.total.image_tokens is None and est.total.cost_standard is None


def test_the_estimate_says_how_many_files_the_batch_api_split_uploads(
    contexts, coco_sample, monkeypatch
):
    rendered(contexts, ImageInput("inline", images_dir=coco_sample / "train2017"))
    requests = contexts.parent / "requests.jsonl"
    assert estimate_requests(requests).batch_files == 1
    shortest = min(len(x) for x in requests.read_bytes().splitlines(keepends=True))
    monkeypatch.setattr(batch_api, "MAX_BATCH_BYTES", shortest)  # one request per file
    assert estimate_requests(requests).batch_files == LIMIT * len(TASKS)
    assert len(batch_api.chunks(load_requests(requests))) == LIMIT * len(TASKS)


def test_image_totals_leave_out_the_requests_already_done(contexts):
    requests = rendered(contexts, ImageInput("url", "low"))
    done = frozenset(r["custom_id"] for r in requests[:5])
    totals = image_totals(contexts.parent / "requests.jsonl", contexts, done)
    assert totals.images == len(requests) - 5 and totals.tokens == 85 * (len(requests) - 5)
    assert totals.cost_usd == pytest.approx(85 * (len(requests) - 5) * 2.50 / 1e6)


def test_an_image_that_is_no_jpeg_is_sent_as_one(contexts, coco_sample, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(coco_sample / "train2017", images)
    name = next(iter_jsonl(contexts))[1]["file_name"]
    Image.open(images / name).save(images / name, "PNG")  # a PNG under a .jpg name
    request = rendered(contexts, ImageInput("inline", images_dir=images))[0]
    assert decoded(image_parts(request)[0]["image_url"]["url"]).format == "JPEG"


def test_options_of_the_other_image_mode_are_refused(coco_sample):
    with pytest.raises(InputError, match="--images is for --image inline"):
        ImageInput("url", images_dir=coco_sample / "train2017")
    with pytest.raises(InputError, match="--image-base-url is for --image url"):
        ImageInput("inline", base_url="https://example.org/", images_dir=coco_sample / "train2017")
