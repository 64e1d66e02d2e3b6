"""Image prompt tokens against OpenAI's published worked examples and constants."""

from __future__ import annotations

from instructgen.client.image_tokens import image_tokens, patches, takes_images, tiles


def test_a_1024_square_at_high_detail_costs_765_tokens_on_gpt_4o():
    # published: scaled to 768 x 768, 4 tiles: 170 * 4 + 85
    assert tiles(1024, 1024) == 4
    assert image_tokens("gpt-4o", 1024, 1024, "high") == 765


def test_a_2048_by_4096_image_at_high_detail_costs_1105_tokens_on_gpt_4o():
    # published: fit to 1024 x 2048, then 768 x 1536, 6 tiles: 170 * 6 + 85
    assert tiles(2048, 4096) == 6
    assert image_tokens("gpt-4o", 2048, 4096, "high") == 1105


def test_low_detail_is_85_tokens_whatever_the_size():
    assert image_tokens("gpt-4o", 4096, 8192, "low") == 85
    assert image_tokens("gpt-4o", 64, 64, "low") == 85
    assert image_tokens("gpt-4o", None, None, "low") == 85  # the size is not needed


def test_an_unknown_size_at_high_detail_is_unknown():
    assert image_tokens("gpt-4o", None, None, "high") is None
    assert image_tokens("gpt-4.1-mini", None, None, "low") is None  # patches need the size


def test_auto_detail_is_counted_as_high_the_most_it_can_cost():
    assert image_tokens("gpt-4o", 640, 480, "auto") == image_tokens("gpt-4o", 640, 480, "high")


def test_images_smaller_than_768_are_not_enlarged():
    # a COCO photo: 640 x 480 stays as it is, 2 tiles wide, 1 high
    assert image_tokens("gpt-4o", 640, 480, "high") == 85 + 2 * 170
    assert image_tokens("gpt-4o", 512, 512, "high") == 85 + 170


def test_gpt_4o_mini_uses_its_own_published_constants():
    assert image_tokens("gpt-4o-mini", 4096, 8192, "low") == 2833
    assert image_tokens("gpt-4o-mini", 1024, 1024, "high") == 2833 + 4 * 5667


def test_gpt_4_1_is_tiled_like_gpt_4o():
    assert image_tokens("gpt-4.1", 1024, 1024, "high") == 765


def test_patch_models_count_32_pixel_patches_times_their_multiplier():
    # published: 1024 x 1024 is 32 x 32 = 1024 patches, under the cap of 1536
    assert patches(1024, 1024) == 1024
    assert image_tokens("gpt-4.1-mini", 1024, 1024, "high") == round(1024 * 1.62)
    assert image_tokens("gpt-4.1-nano", 1024, 1024, "low") == round(1024 * 2.46)


def test_an_image_over_1536_patches_is_shrunk_to_fit():
    # published: 1800 x 2400 needs 4275 patches; shrunk to 1056 x 1408 it needs 33 x 44 = 1452
    assert patches(1800, 2400) == 1452


def test_newer_models_use_their_published_constants():
    assert image_tokens("gpt-5", 1024, 1024, "high") == 70 + 4 * 140
    assert image_tokens("o3", 1024, 1024, "low") == 75
    assert image_tokens("o1-2024-12-17", 1024, 1024, "high") == 75 + 4 * 150
    assert image_tokens("o4-mini", 1024, 1024, "high") == round(1024 * 1.72)
    assert image_tokens("gpt-5-mini-2025-08-07", 1024, 1024, "low") == round(1024 * 1.62)


def test_small_reasoning_models_without_vision_are_not_taken_for_their_family():
    for model in ("o1-mini", "o3-mini", "o3-mini-2025-01-31", "o1-preview"):
        assert takes_images(model) is False


def test_dated_snapshots_follow_their_family():
    assert image_tokens("gpt-4o-2024-08-06", 1024, 1024, "high") == 765
    assert image_tokens("gpt-4o-mini-2024-07-18", 10, 10, "low") == 2833
    assert takes_images("gpt-4-turbo-2024-04-09") is True


def test_text_only_models_are_known_to_take_no_images():
    for model in ("gpt-4", "gpt-4-0613", "gpt-3.5-turbo", "gpt-4-turbo-preview"):
        assert takes_images(model) is False
        assert image_tokens(model, 640, 480, "high") is None


def test_a_model_with_no_published_constants_is_unknown_not_guessed():
    assert takes_images("llava-hf/llava-1.5-7b-hf") is None
    assert image_tokens("llava-hf/llava-1.5-7b-hf", 640, 480, "high") is None
