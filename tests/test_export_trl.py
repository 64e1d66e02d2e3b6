"""The exported folder trains as it is: two steps of TRL's SFTTrainer on a tiny LLaVA model.

The model (2-layer CLIP tower, 2-layer Llama) and its processor are built from configs with
random weights, as the trainer tests do; nothing is downloaded.
"""

from __future__ import annotations

import math

import datasets
import pytest

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch", reason="needs the [train] extra: make install-train")
trl = pytest.importorskip("trl", reason="needs the [train] extra: make install-train")

from train_tiny import _texts, build_tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from instructgen.curate.export import export  # noqa: E402
from instructgen.curate.export_card import Provenance  # noqa: E402
from instructgen.curate.export_hf import HfWriter  # noqa: E402
from instructgen.train.tiny import IMAGE_SIDE, PATCH, llm_config, vision_config  # noqa: E402

TOKENS_PER_IMAGE = (IMAGE_SIDE // PATCH) ** 2
# A minimal chat template over typed parts: the image part becomes the processor's <image>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %} {% endfor %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)


def tiny_llava(test_data):
    tokenizer = build_tokenizer(_texts([test_data / "train_instruct.json"]))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<unk>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIDE},
            crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        ),
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the default strategy
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=vision_config("clip"),
        text_config=llm_config("llama", tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config), processor


@pytest.fixture
def fresh_accelerator_state():
    """TRL's Trainer sets accelerate's process-wide state; later trainer tests need it unset."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_sft_trainer_takes_two_steps_on_the_exported_folder(
    test_data, tmp_path, fresh_accelerator_state
):
    out = tmp_path / "hf"
    export(
        test_data / "train_instruct.json",
        out,
        lambda folder: HfWriter(folder, Provenance(), "cc-by-4.0", str(out)),
        test_data / "train_images",
    )
    train = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    model, processor = tiny_llava(test_data)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=None,  # truncation would cut image tokens
    )
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=processor
    )
    batch = trainer.data_collator([train[0], train[1]])
    assert batch["pixel_values"].shape == (2, 3, IMAGE_SIDE, IMAGE_SIDE)
    image_token = model.config.image_token_index
    assert (batch["input_ids"] == image_token).sum(dim=1).tolist() == [TOKENS_PER_IMAGE] * 2
    result = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(result.training_loss)
