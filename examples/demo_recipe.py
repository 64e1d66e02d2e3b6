"""The demo recipe's own inputs (`make demo-recipe`), each labelled for what it is.

    python examples/demo_recipe.py towers OUT [--pair 2023|2026]   tiny towers, RANDOM weights
    python examples/demo_recipe.py stage1-pairs contexts.jsonl -o pairs.json
    python examples/demo_recipe.py questions llava_instruct.json -o questions.jsonl \
        --reference reference.jsonl

- towers: 2023, a 2-layer CLIP vision tower (32x32 pixels, 8x8 patches: 16 image tokens) and a
  2-layer Llama; 2026, a 2-layer SigLIP tower and a 2-layer Qwen2 whose tokenizer carries a
  ChatML chat template (for `--template chat`). Built from configs, nothing downloaded; the
  tokenizers are byte-level, so every text tokenizes, the towers do not depend on the data,
  and a new seed file does not rebuild them. Their answers are noise: every figure made with
  them is labelled "random weights".
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
from transformers import PreTrainedTokenizerFast

from instructgen.train.tiny import (
    CHATML_SPECIALS,
    byte_tokenizer,
    chatml_tokenizer,
    save_llm,
    save_vision_tower,
)

SPECIALS = ["<unk>", "<s>", "</s>"]
SEED = 0
LLM_WIDTH, LLM_POSITIONS = 64, 4096  # byte-level tokens: long sequences


def clip_llama(out: Path) -> dict:
    """The paper's pair in miniature: CLIP (16 image tokens) + Llama, `v1` template."""
    save_vision_tower(out / "vision", "clip")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_tokenizer(SPECIALS),
        unk_token="<unk>", bos_token="<s>", eos_token="</s>",
    )  # fmt: skip
    save_llm(out / "llm", "llama", tokenizer, LLM_WIDTH, LLM_POSITIONS)
    return {
        "vision": "CLIP ViT, 2 layers, hidden 32, 32x32 px, patch 8 (random weights)",
        "llm": "Llama, 2 layers, hidden 64, byte-level tokenizer (random weights)",
    }


def siglip_qwen2(out: Path) -> dict:
    """Today's pair in miniature: SigLIP (16 image tokens) + Qwen2 with a ChatML template."""
    save_vision_tower(out / "vision", "siglip")
    tokenizer = chatml_tokenizer(byte_tokenizer(CHATML_SPECIALS))
    save_llm(out / "llm", "qwen2", tokenizer, LLM_WIDTH, LLM_POSITIONS)
    return {
        "vision": "SigLIP ViT, 2 layers, hidden 32, 32x32 px, patch 8 (random weights)",
        "llm": "Qwen2, 2 layers, hidden 64, byte-level tokenizer, ChatML template (random weights)",
    }


PAIRS = {"2023": clip_llama, "2026": siglip_qwen2}


def towers(out: Path, pair: str) -> None:
    """Save a tiny pair under `out` and `random_weights.json`, which labels every figure."""
    torch.manual_seed(SEED)
    note = {"random_weights": True, "seed": SEED, "pair": pair, **PAIRS[pair](out)}
    note["why"] = "a demo of the loop: no figure made with these towers means anything"
    (out / "random_weights.json").write_text(json.dumps(note, indent=2) + "\n")
    print(f"tiny {pair} towers with RANDOM weights -> {out}/vision, {out}/llm")


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
    built = sub.add_parser("towers")
    built.add_argument("out", type=Path)
    built.add_argument("--pair", choices=sorted(PAIRS), default="2023")
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
        towers(args.out, args.pair)
    elif args.command == "stage1-pairs":
        stage1_pairs(args.contexts, args.output, args.brief, args.seed)
    else:
        questions(args.build, args.output, args.reference)


if __name__ == "__main__":
    main()
