"""Tiny towers with random weights, built from configs with nothing downloaded: the ones
`make demo-recipe`, the trainer's tests and the CPU benchmarks train. A figure made with them
says nothing about a recipe; whoever shows one labels it "random weights".

A vision tower is 2 layers of width 32 over 32 x 32 images in 8 x 8 patches (16 image tokens),
CLIP or SigLIP; an LLM is a 2-layer Llama or Qwen2 over the tokenizer it is given.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

IMAGE_SIDE, PATCH = 32, 8  # pixels: 16 patches, so 16 image tokens per image
LAYERS = {"num_hidden_layers": 2, "num_attention_heads": 2}
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_DEFAULT_SYSTEM = "You are a helpful assistant."
# ChatML as Qwen2-Instruct lays it out: a default system turn when none is given.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + CHATML_DEFAULT_SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vision_config(family: str, hidden_size: int = 32):
    """The config of a tiny `clip` or `siglip` vision tower."""
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    config = {"clip": CLIPVisionConfig, "siglip": SiglipVisionConfig}[family]
    return config(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        image_size=IMAGE_SIDE,
        patch_size=PATCH,
        **LAYERS,
    )


def save_vision_tower(folder: Path, family: str) -> Path:
    """A tiny `clip` or `siglip` tower with random weights and its image processor in `folder`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionModel,
        SiglipImageProcessor,
        SiglipVisionModel,
    )

    if family == "clip":
        CLIPVisionModel(vision_config("clip")).save_pretrained(folder)
        square = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
        processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIDE}, crop_size=square)
    else:
        SiglipVisionModel(vision_config("siglip")).save_pretrained(folder)
        processor = SiglipImageProcessor(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    processor.save_pretrained(folder)
    return folder


def llm_config(family: str, tokenizer, hidden_size: int = 32, max_positions: int = 512):
    """The config of a tiny `llama` or `qwen2` LLM over `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, Qwen2Config

    config, kv_heads = {"llama": (LlamaConfig, 2), "qwen2": (Qwen2Config, 1)}[family]
    return config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **LAYERS,
    )


def save_llm(
    folder: Path, family: str, tokenizer, hidden_size: int = 32, max_positions: int = 512
) -> Path:
    """A tiny `llama` or `qwen2` with random weights and `tokenizer` in `folder`."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    model = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM}[family]
    model(llm_config(family, tokenizer, hidden_size, max_positions)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def byte_tokenizer(specials: list[str]) -> Tokenizer:
    """One token per byte (GPT-2's byte alphabet), no merges, `specials` first: every text
    tokenizes, whatever the data."""
    alphabet = specials + sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE({s: i for i, s in enumerate(alphabet)}, [], unk_token=specials[0]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return core


def chatml_tokenizer(core: Tokenizer):
    """A tokenizer over `core` (which holds CHATML_SPECIALS) with Qwen2's ChatML special tokens
    and chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=CHATML_SPECIALS[1:],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
