"""`answer` with a local checkpoint: answers/s and tokens/s at batch size 8 against 1.

    .venv/bin/python benchmarks/answer.py               # CPU, small towers (default)
    .venv/bin/python benchmarks/answer.py --size 7b     # CUDA, bf16: ViT-L/14-336 + 7B Llama

Towers are built by the trainer benchmark's `build_towers` (random weights, nothing
downloaded, saved as pretrained ones) and loaded into a LLaVA model with a fresh projector,
prompted in the v1 template. The questions are LLaVA-Bench's qa90 texts
(examples/llava-bench-qa90) about the test images, cycled. Each batch size runs the real
`answer_with_checkpoint` (answers file, partial file and all) after one warm-up batch. A
random model rarely stops early, so every answer runs to --max-new-tokens and both sides
generate the same number of tokens. The baseline is batch size 1: one question at a time, as
`chat` answers. On CUDA the peak memory of each run is printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from train import build_towers  # noqa: E402

from instructgen.eval.answer import AnswerFile  # noqa: E402
from instructgen.eval.generate import Answerer, answer_with_checkpoint  # noqa: E402
from instructgen.eval.records import Question, read_questions  # noqa: E402
from instructgen.train.model import (  # noqa: E402
    Towers,
    build_model,
    load_image_processor,
    load_tokenizer,
)

IMAGES = ROOT / "tests" / "data" / "train_images"
QUESTIONS = ROOT / "examples" / "llava-bench-qa90" / "qa90_questions.jsonl"
DEFAULTS = {"small": (16, 16), "7b": (16, 64)}  # questions, max new tokens


def assemble(vision: Path, llm: Path, dtype: torch.dtype, device: str) -> Answerer:
    """The towers and a fresh projector as a LLaVA model, prompted in the v1 template (what
    `load_answerer` returns for a checkpoint; loading a saved 7B twice would double set-up)."""
    tokenizer = load_tokenizer(str(llm))
    model = build_model(Towers(str(vision), str(llm)), tokenizer, dtype)
    processor = load_image_processor(str(vision))
    return Answerer(model.to(device).eval(), tokenizer, processor, "v1", False)


def questions(n: int) -> list[Question]:
    """The first `n` qa90 questions, each about one of the test images in turn."""
    images = sorted(p.name for p in IMAGES.iterdir())
    qa90 = read_questions(QUESTIONS)
    return [
        Question(i, images[i % len(images)], qa90[i % len(qa90)].text, qa90[i % len(qa90)].category)
        for i in range(n)
    ]


def measure(answerer, items, batch: int, max_new: int, root: Path) -> dict:
    """One timed `answer` run at `batch` questions per step, after a warm-up batch."""
    warm = AnswerFile(root / f"warm-{batch}.jsonl", items[:batch], "bench")
    answer_with_checkpoint(answerer, warm, IMAGES, batch, max_new, 0.0)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    answers = AnswerFile(root / f"answers-{batch}.jsonl", items, "bench")
    stats = answer_with_checkpoint(answerer, answers, IMAGES, batch, max_new, 0.0)
    if cuda:
        torch.cuda.synchronize()
    return {
        "batch": batch,
        "answers_per_s": stats.answers_per_s,
        "tokens_per_s": stats.tokens_per_s,
        "tokens": stats.completion_tokens,
        "seconds": stats.seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(DEFAULTS), default="small")
    parser.add_argument("--questions", type=int, help="questions per run")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per answer")
    parser.add_argument("--batch", type=int, default=8, help="the batch size set against 1")
    args = parser.parse_args()
    n, max_new = DEFAULTS[args.size]
    n, max_new = args.questions or n, args.max_new_tokens or max_new
    cuda = torch.cuda.is_available()
    if args.size == "7b" and not cuda:
        sys.exit("--size 7b needs a CUDA GPU")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"answer benchmark: size {args.size}, {n} questions x {max_new} new tokens, {name}")
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with torch.device(device):  # random init on the GPU: minutes faster for 7B
            vision, llm, _ = build_towers(root, args.size)
        answerer = assemble(vision, llm, dtype, device)
        print(f"set-up (build, save, load the towers): {time.perf_counter() - started:.0f} s")
        items = questions(n)
        rows = [measure(answerer, items, b, max_new, root) for b in (1, args.batch)]
    base = rows[0]
    print(f"{'batch size':<22}{'answers/s':>11}{'tokens/s':>11}{'vs batch 1':>12}{'peak GiB':>10}")
    for row in rows:
        label = f"{row['batch']}" + (" (baseline)" if row is base else "")
        ratio = row["answers_per_s"] / base["answers_per_s"]
        print(
            f"{label:<22}{row['answers_per_s']:>11.2f}{row['tokens_per_s']:>11.1f}"
            f"{ratio:>11.2f}x{row['peak_gib']:>10.1f}"
        )
    print(json.dumps({"size": args.size, "device": name, "rows": rows}))


if __name__ == "__main__":
    main()
