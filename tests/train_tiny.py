"""Tiny towers for trainer tests, built locally from configs with random weights.

A 2-layer CLIP vision tower (32x32 images, 8x8 patches: 16 tokens per image), a 2-layer
Llama and a word-level tokenizer over the test data's words, each saved with save_pretrained
into a folder that the trainer is given as --vision / --llm, as a user would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from instructgen.train.data import V1_SYSTEM

SPECIALS = ["<unk>", "<s>", "</s>"]
TEMPLATE_TEXT = f"{V1_SYSTEM} USER: ASSISTANT: What does the picture show? a cat a dog"


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


def build_towers(root: Path, data_files: list[Path], seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny CLIP vision tower and a tiny Llama (+ tokenizer) under `root`."""
    torch.manual_seed(seed)
    texts = _texts(data_files)
    vision_dir, llm_dir = root / "vision", root / "llm"
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModel(vision).save_pretrained(vision_dir)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(vision_dir)
    tokenizer = build_tokenizer(texts)
    llm = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(llm).save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return vision_dir, llm_dir


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
