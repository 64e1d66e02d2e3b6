"""The demo recipe's own inputs (`make demo-recipe`), each labelled for what it is.

    python examples/demo_recipe.py towers OUT            tiny towers with RANDOM weights
    python examples/demo_recipe.py stage1-pairs contexts.jsonl -o pairs.json
    python examples/demo_recipe.py questions llava_instruct.json -o questions.jsonl \
        --reference reference.jsonl

- towers: a 2-layer CLIP vision tower (32x32 pixels, 8x8 patches: 16 image tokens) and a
  2-layer Llama with a byte-level tokenizer, built from configs, nothing downloaded. Every text
  tokenizes, so the towers do not depend on the data, and a new seed file does not rebuild
  them. Their answers are noise: every figure made with them is labelled "random weights".
- stage1-pairs: stage 1 needs images, and CC3M's are not bundled (the demo filters the bundled
  CC3M rows all the same). So each bundled COCO image's first human caption becomes one
  brief-caption pair, as pretrain.json holds them; every record says `"source": "coco-caption
  (demo stand-in for CC3M)"`.
- questions: LLaVA-Bench's val2014 images are not bundled either, so the demo asks, about the
  bundled images, the first question of every build record (category conv, detail or complex
  by its task), with the build's own (template-backend) answer as the judge's reference.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIALS = ["<unk>", "<s>", "</s>"]
SEED = 0


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte (GPT-2's byte alphabet), no merges, plus <unk>, <s> and </s>."""
    alphabet = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE({s: i for i, s in enumerate(alphabet)}, [], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def towers(out: Path) -> None:
    """Save the tiny towers under `out` and `random_weights.json`, which labels every figure."""
    torch.manual_seed(SEED)
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )  # fmt: skip
    CLIPVisionModel(vision).save_pretrained(out / "vision")
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out / "vision")
    tokenizer = byte_tokenizer()
    llm = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(llm).save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    note = {
        "random_weights": True,
        "seed": SEED,
        "vision": "CLIP ViT, 2 layers, hidden 32, 32x32 px, patch 8 (random weights)",
        "llm": "Llama, 2 layers, hidden 64, byte-level tokenizer (random weights)",
        "why": "a demo of the loop: no figure made with these towers means anything",
    }
    (out / "random_weights.json").write_text(json.dumps(note, indent=2) + "\n")
    print(f"tiny towers with RANDOM weights -> {out}/vision, {out}/llm")


def stage1_pairs(contexts: Path, out: Path, brief: Path, seed: int) -> None:
    """pretrain.json-style records: a brief-caption question and the image's first caption."""
    phrasings = [line.strip() for line in brief.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    records = []
    for line in contexts.read_text().splitlines():
        context = json.loads(line)
        records.append({
            "id": Path(context["file_name"]).stem,
            "image": context["file_name"],
            "conversations": [
                {"from": "human", "value": f"{rng.choice(phrasings)}\n<image>"},
                {"from": "gpt", "value": context["captions"][0]},
            ],
            "source": "coco-caption (demo stand-in for CC3M)",
        })  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"{len(records)} COCO-caption pairs for stage 1 (demo stand-in for CC3M) -> {out}")


CATEGORIES = {"conversation": "conv", "detail": "detail", "complex_reasoning": "complex"}


def questions(build: Path, out: Path, reference: Path) -> None:
    """The first question of every build record, and the record's own answer as reference."""
    asked, answered = [], []
    for n, record in enumerate(json.loads(build.read_text())):
        human, gpt = record["conversations"][0]["value"], record["conversations"][1]["value"]
        text = human.replace("<image>", "").strip()
        category = CATEGORIES.get(record.get("task", ""), "other")
        asked.append(
            {"question_id": n, "image": record["image"], "text": text, "category": category}
        )
        answered.append({
            "question_id": n, "prompt": text, "text": gpt, "answer_id": record.get("custom_id"),
            "model_id": f"{record.get('backend', 'build')} (reference)", "metadata": {},
        })  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(q) + "\n" for q in asked))
    reference.write_text("".join(json.dumps(a) + "\n" for a in answered))
    print(f"{len(asked)} demo questions on the bundled images -> {out}, reference -> {reference}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("towers").add_argument("out", type=Path)
    pairs = sub.add_parser("stage1-pairs")
    pairs.add_argument("contexts", type=Path)
    pairs.add_argument("-o", "--output", type=Path, required=True)
    pairs.add_argument("--brief", type=Path, default=Path("prompts/instructions/brief.txt"))
    pairs.add_argument("--seed", type=int, default=0)
    asked = sub.add_parser("questions")
    asked.add_argument("build", type=Path)
    asked.add_argument("-o", "--output", type=Path, required=True)
    asked.add_argument("--reference", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "towers":
        towers(args.out)
    elif args.command == "stage1-pairs":
        stage1_pairs(args.contexts, args.output, args.brief, args.seed)
    else:
        questions(args.build, args.output, args.reference)


if __name__ == "__main__":
    main()
