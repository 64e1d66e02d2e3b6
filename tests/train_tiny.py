"""Tiny towers for trainer tests, built locally from configs with random weights.

A 2-layer CLIP vision tower (32x32 images, 8x8 patches: 16 tokens per image), a 2-layer
Llama and a word-level tokenizer over the test data's words, each saved with save_pretrained
into a folder that the trainer is given as --vision / --llm, as a user would. The 2026 pair:
a 2-layer SigLIP tower of the same shape and a 2-layer Qwen2 whose tokenizer has ChatML
special tokens and a ChatML chat template (ours, in the layout Qwen2-Instruct uses).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from instructgen.train.data import V1_SYSTEM
from instructgen.train.tiny import (
    CHATML_DEFAULT_SYSTEM,
    CHATML_SPECIALS,
    chatml_tokenizer,
    save_llm,
    save_vision_tower,
)

SPECIALS = ["<unk>", "<s>", "</s>"]
TEMPLATE_TEXT = f"{V1_SYSTEM} USER: ASSISTANT: What does the picture show? a cat a dog"
CHATML_TEMPLATE_WORDS = f"system\n{CHATML_DEFAULT_SYSTEM}\nuser\nassistant\n"
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
# Llama 3's layout: bos, then per message a role header and the text ended by <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def vocabulary(texts: list[str]) -> list[str]:
    """Specials first, then every word and punctuation run of `texts`, sorted."""
    words = {w for text in texts for w in re.findall(r"\w+|[^\w\s]+", text)}
    return SPECIALS + sorted(words - set(SPECIALS) - {"<", ">", "image"})


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer that knows every word of `texts` (others map to <unk>)."""
    vocab = {w: i for i, w in enumerate(vocabulary(texts))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def byte_level_bpe(texts: list[str], specials: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE core of `vocab_size` tokens trained on `texts`, `specials` first."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    return core


def build_chatml_tokenizer(texts: list[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (`vocab_size` tokens, trained on `texts`) with Qwen2's ChatML
    special tokens and chat template; saved beside a Qwen2 config it loads as `Qwen2Tokenizer`."""
    return chatml_tokenizer(
        byte_level_bpe([*texts, CHATML_TEMPLATE_WORDS], CHATML_SPECIALS, vocab_size)
    )


def build_llama3_tokenizer(texts: list[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Llama 3's special tokens, whose eos (`<|end_of_text|>`)
    is not the template's end of turn (`<|eot_id|>`), and which adds bos by default."""
    core = byte_level_bpe([*texts, "system user assistant"], LLAMA3_SPECIALS, vocab_size)
    bos = LLAMA3_SPECIALS[0]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, core.token_to_id(bos))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token="<|end_of_text|>"
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def build_siglip_qwen2(root: Path, data_files: list[Path], seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny SigLIP vision tower and a tiny Qwen2 (+ ChatML tokenizer) under `root`."""
    torch.manual_seed(seed)
    vision_dir = save_vision_tower(root / "siglip", "siglip")
    return vision_dir, save_llm(root / "qwen2", "qwen2", build_chatml_tokenizer(_texts(data_files)))


def build_towers(root: Path, data_files: list[Path], seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny CLIP vision tower and a tiny Llama (+ tokenizer) under `root`."""
    torch.manual_seed(seed)
    vision_dir = save_vision_tower(root / "vision", "clip")
    return vision_dir, save_llm(root / "llm", "llama", build_tokenizer(_texts(data_files)))


def write_config_only_towers(root: Path, data_files: list[Path]) -> tuple[Path, Path]:
    """The paper's towers as a user downloads them minus the weights: CLIP ViT-L/14-336 and a
    LLaMA-7B, each a folder with config.json (and processor or tokenizer files) only."""
    vision_dir, llm_dir = root / "vision", root / "llm"
    CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    ).save_pretrained(vision_dir)
    CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    ).save_pretrained(vision_dir)
    build_tokenizer(_texts(data_files)).save_pretrained(llm_dir)
    LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ).save_pretrained(llm_dir)
    return vision_dir, llm_dir


def _texts(data_files: list[Path]) -> list[str]:
    """Every turn of the records in `data_files`, and the template's words."""
    texts = [TEMPLATE_TEXT]
    for path in data_files:
        for record in json.loads(path.read_text()):
            texts += [turn["value"] for turn in record["conversations"]]
    return texts


# llava-1.5's layout as a processor chat template over typed parts: `USER: <image>\n<text> `
# then `ASSISTANT:`; it writes no bos, which its Llama tokenizer adds by default.
LLAVA15_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }} "
    "{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_hub_llava(root: Path, vision_dir: Path, llm_dir: Path, seed: int = 0) -> Path:
    """A LLaVA folder as one comes from the Hub (not trained here): the tiny CLIP and Llama in
    a random `LlavaForConditionalGeneration` with a `LlavaProcessor` holding llava-1.5's chat
    template, and a tokenizer that adds bos by default."""
    from tokenizers.processors import TemplateProcessing
    from transformers import (
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = LlavaConfig(
        vision_config=CLIPVisionConfig.from_pretrained(vision_dir),
        text_config=LlamaConfig.from_pretrained(llm_dir),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
    )
    config.text_config.vocab_size = len(tokenizer)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor.from_pretrained(vision_dir),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA15_TEMPLATE,
    )
    folder = root / "hub-llava"
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
