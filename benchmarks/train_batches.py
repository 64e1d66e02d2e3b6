"""Length-grouped batches against shuffled ones: the padding share and the trained tokens/s.

    .venv/bin/python benchmarks/train_batches.py            # CPU, a few minutes
    .venv/bin/python benchmarks/train_batches.py --steps 10  # shorter

The mix is real text: LLaVA's GPT-4 answers with their images (tests/data/train_instruct.json,
../shared/data/llava/coco2014_val_gpt4_qa_30x3.jsonl, the qa90 questions with GPT-4's answers
in examples/llava-bench-qa90/) and ScienceQA's train split of ../shared/data/scienceqa
(problems 1-1773) converted by our converter (QCM-LEA): its text-only problems are the
text-only records, those with an image image records. Image records are given the test images,
cycled (their pixels do not change a length). Lengths are those of the 2026 pair: 729 image
tokens (SigLIP so400m at 384 px, patch 14) and the ChatML template, tokenized by a byte-level
BPE of 8,000 tokens trained on the mix (our stand-in for Qwen2's tokenizer).

1. Padding share: padded tokens / all tokens of the batches of one epoch (exact lengths, no
   model), for micro-batches of 4, 8 and 16: shuffled (`--no-group-by-length`) and grouped.
2. Trained tokens/s on CPU: stage 2 with `--template chat` through `train()`, with towers of
   the real geometry but tiny widths (a 2-layer SigLIP at 384 px / 14, a 2-layer Qwen2 of width
   128), grouped and shuffled; tokens/s counts non-padding tokens, as `train` logs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from train_tiny import build_chatml_tokenizer  # noqa: E402

from instructgen.contracts import IMAGE_TOKEN  # noqa: E402
from instructgen.scienceqa.files import read_official  # noqa: E402
from instructgen.scienceqa.problems import llava_record, parse_format  # noqa: E402
from instructgen.train import loop  # noqa: E402
from instructgen.train.batches import LengthGroupedBatches, record_length  # noqa: E402
from instructgen.train.data import parse_records, template_pieces, tokenize_many, wants_bos  # noqa: E402
from instructgen.train.loop import LOG_FILE, TrainConfig, train  # noqa: E402
from instructgen.train.model import load_tokenizer  # noqa: E402

DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"
IMAGES = DATA / "train_images"
IMAGE_TOKENS = (384 // 14) ** 2  # 729
MICRO_BATCHES = (4, 8, 16)


def mix() -> list[dict]:
    """The benchmark's records in LLaVA format (see the module docstring)."""
    records = json.loads((DATA / "train_instruct.json").read_text())
    for line in (SHARED / "llava" / "coco2014_val_gpt4_qa_30x3.jsonl").read_text().splitlines():
        row = json.loads(line)
        records.append(conversation(f"qa30-{len(records)}", row["instruction"], row["output"]))
    bench = ROOT / "examples" / "llava-bench-qa90"
    questions = [json.loads(x) for x in (bench / "qa90_questions.jsonl").read_text().splitlines()]
    answers = [json.loads(x) for x in (bench / "qa90_gpt4_answer.jsonl").read_text().splitlines()]
    for question, answer in zip(questions, answers, strict=True):
        records.append(conversation(f"qa90-{question['question_id']}", question["text"],
                                    answer["text"]))  # fmt: skip
    sqa = read_official(
        SHARED / "scienceqa" / "problems_1773.json", SHARED / "scienceqa" / "pid_splits.json",
        "train",
    )  # fmt: skip
    fmt = parse_format("QCM-LEA")
    records += [r for p in sqa.problems if (r := llava_record(p, fmt)) is not None]
    names = sorted(p.name for p in IMAGES.glob("*.jpg"))
    for k, record in enumerate(r for r in records if "image" in r):
        record["image"] = names[k % len(names)]
    return records


def conversation(rid: str, question: str, answer: str) -> dict:
    return {
        "id": rid,
        "image": "placeholder.jpg",
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def build_towers(root: Path, records: list[dict]) -> tuple[Path, Path]:
    """SigLIP so400m's geometry and a Qwen2, both 2 layers and narrow, random weights."""
    torch.manual_seed(0)
    texts = [turn["value"] for r in records for turn in r["conversations"]]
    tokenizer = build_chatml_tokenizer(texts, vocab_size=8000)
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=2, image_size=384, patch_size=14)  # fmt: skip
    SiglipVisionModel(vision).save_pretrained(root / "vision")
    SiglipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(root / "vision")
    llm = Qwen2Config(vocab_size=len(tokenizer) + 1, hidden_size=128, intermediate_size=384,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=False,
                      eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    Qwen2ForCausalLM(llm).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return root / "vision", root / "llm"


def exact_lengths(records, llm: Path) -> list[int]:
    """Tokens per record under the chat template, image tokens included, cut at 2048."""
    tokenizer = load_tokenizer(str(llm))
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    pieces = [template_pieces(r, "chat", tokenizer) for r in records]
    examples = tokenize_many(
        pieces, tokenizer, image_id, IMAGE_TOKENS, 2048, bos=wants_bos("chat", tokenizer)
    )
    return [len(e.input_ids) for e in examples]


def padding_share(batches: list[list[int]], lengths: list[int]) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def shuffled_batches(n: int, size: int, seed: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[k : k + size] for k in range(0, n, size)]


def throughput(cfg: TrainConfig, warmup: int) -> tuple[float, float]:
    """(trained tokens/s, seconds per step) over the steps after `warmup`: all their tokens
    over all their time (batches of text alone are short, so a median of steps would flatter)."""
    stamps: list[float] = []
    train(cfg, echo=lambda line: stamps.append(time.perf_counter()))  # a line per step
    log = [json.loads(x) for x in (cfg.output / LOG_FILE).read_text().splitlines()]
    # stamps[0] is the start line; then one per step
    step_times = [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=True)]
    rates = [row["tokens_per_s"] for row in log[1:]]
    measured = list(zip(rates, step_times, strict=True))[warmup - 1 :]
    seconds = sum(dt for _, dt in measured)
    return sum(rate * dt for rate, dt in measured) / seconds, seconds / len(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps before measuring")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per step (CPU run)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    transformers.utils.logging.disable_progress_bar()
    loop.export_model = lambda *a, **k: None  # the export is not what is measured
    raw = mix()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "mix.json"
        data.write_text(json.dumps(raw))
        records = parse_records(raw, data)
        n_image = sum(bool(r.images) for r in records)
        vision, llm = build_towers(root, raw)
        lengths = exact_lengths(records, llm)
        print(
            f"mix: {len(records)} records, {n_image} with an image, {len(records) - n_image} "
            f"text-only; tokens per record: mean {statistics.mean(lengths):.0f}, "
            f"median {statistics.median(lengths):.0f}, max {max(lengths)} "
            f"({IMAGE_TOKENS} per image)"
        )
        print(f"\n{'micro-batch':>11}{'shuffled':>11}{'grouped':>10}   padding share, one epoch")
        estimate = [record_length(r, IMAGE_TOKENS) for r in records]
        has_image = [bool(r.images) for r in records]
        for size in MICRO_BATCHES:
            grouped = LengthGroupedBatches(estimate, has_image, size, seed=0).batches(0)
            plain = shuffled_batches(len(records), size, seed=0)
            print(
                f"{size:>11}{padding_share(plain, lengths):>11.1%}"
                f"{padding_share(grouped, lengths):>10.1%}"
            )
        print(
            f"\nCPU, stage 2 --template chat, micro-batch {args.micro_batch}, "
            f"{args.warmup}+{args.steps} steps, fp32, {torch.get_num_threads()} threads"
        )
        rows = []
        for group in (False, True):
            cfg = TrainConfig(
                stage=2, data=data, images=IMAGES, output=root / f"group-{group}",
                vision=str(vision), llm=str(llm), template="chat", group_by_length=group,
                max_steps=args.warmup + args.steps, global_batch=args.micro_batch,
                micro_batch=args.micro_batch, gradient_checkpointing=False, precision="fp32",
                save_every=0, workers=0, log_every=1,
            )  # fmt: skip
            tps, per_step = throughput(cfg, args.warmup)
            rows.append((group, tps, per_step))
            print(f"  {'grouped ' if group else 'shuffled'}: {tps:,.0f} trained tokens/s, "
                  f"{per_step:.2f} s per step")  # fmt: skip
    (_, base, base_step), (_, fast, fast_step) = rows
    print(f"\n{'batches':<10}{'tokens/s':>10}{'s/step':>8}{'vs shuffled':>13}")
    print(f"{'shuffled':<10}{base:>10,.0f}{base_step:>8.2f}{1:>12.2f}x")
    print(f"{'grouped':<10}{fast:>10,.0f}{fast_step:>8.2f}{fast / base:>12.2f}x")


if __name__ == "__main__":
    main()
