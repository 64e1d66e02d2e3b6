"""ScienceQA at full size: convert 21,208 problems, score 4,241 answers, unpack a parquet split.

The 1,773 real problems (../shared/data/scienceqa) are repeated with fresh pids to the full
dataset's splits (train 12,726, val 4,241, test 4,241); test answers are LLaVA-13B's real
outputs for the source problems. The parquet part writes the test split in the Hugging Face
layout with placeholder PNGs of about the real images' size (~60 KB) and unpacks it; the
baseline decodes each image and saves it again with Pillow, as a loader that hands out PIL
images would. Prints seconds, rates and peak RSS.
"""

from __future__ import annotations

import io
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from instructgen.files import write_json, write_jsonl
from instructgen.scienceqa.files import read_answers, read_official, read_parquet
from instructgen.scienceqa.problems import llava_record, parse_format, question_line, score_answers

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
SPLITS = {"train": 12_726, "val": 4_241, "test": 4_241}
HF_FIELDS = ["question", "choices", "answer", "hint", "task", "grade", "subject", "topic"]
HF_FIELDS += ["category", "skill", "lecture", "solution"]
BASELINE_ROWS = 1_000  # the baseline is slow: its rate is measured on the first rows


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def full_size(tmp: Path) -> tuple[Path, Path, Path, list[dict]]:
    """problems.json, pid_splits.json and test answers at the full dataset's size."""
    real = json.loads((SHARED / "scienceqa/problems_1773.json").read_text())
    outputs = json.loads((SHARED / "llava/test_sqa_llava_13b_v0.json").read_text())["outputs"]
    problems, splits, answers, test_rows = {}, {s: [] for s in SPLITS}, [], []
    pid = 0
    for split, n in SPLITS.items():
        pool = [(k, v) for k, v in real.items() if v["split"] == split]
        for i in range(n):
            pid += 1
            source, problem = pool[i % len(pool)]
            problems[str(pid)] = problem
            splits[split].append(str(pid))
            if split == "test":
                answers.append({"question_id": str(pid), "text": outputs[source]})
                test_rows.append(problem)
    write_json(tmp / "problems.json", problems)
    write_json(tmp / "pid_splits.json", splits)
    write_jsonl(tmp / "answers.jsonl", answers)
    return tmp / "problems.json", tmp / "pid_splits.json", tmp / "answers.jsonl", test_rows


def placeholder_png(rng: random.Random) -> bytes:
    """A distinct PNG of about 60 KB: a flat diagram with a noisy photo-like patch."""
    img = Image.new("RGB", (400, 300), (240, 240, 235))
    img.paste(Image.frombytes("RGB", (130, 130), rng.randbytes(130 * 130 * 3)), (20, 20))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_hf_parquet(path: Path, rows: list[dict]) -> int:
    rng = random.Random(0)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": placeholder_png(rng), "path": None} if r["image"] else None for r in rows]
    table = {"image": pa.array(images, image_type)}
    table |= {f: pa.array([r[f] for r in rows]) for f in HF_FIELDS if f != "answer"}
    table["answer"] = pa.array([r["answer"] for r in rows], pa.int8())
    pq.write_table(pa.table(table), path)
    return sum(1 for i in images if i)


def timed(fn) -> tuple[int, float, float]:
    """(items fn returns, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def row(step: str, n: int, wall: float, cpu: float) -> None:
    print(f"{step:<46} {n:>7,} {wall:>7.2f} {cpu:>7.2f} {n / wall:>8,.0f}")


def main() -> None:
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found (shared data sits beside the project)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        problems, splits, answers, test_rows = full_size(tmp)
        fmt = parse_format("QCM-LEA")
        print(f"{'step':<46} {'items':>7} {'wall s':>7} {'CPU s':>7} {'items/s':>8}")

        def convert(split: str) -> int:
            read = read_official(problems, splits, split)
            write_json(tmp / f"{split}.json", [llava_record(p, fmt) for p in read.problems])
            return len(read.problems)

        runs = [timed(lambda split=split: convert(split)) for split in SPLITS]
        for split, run in zip(SPLITS, runs, strict=True):
            row(f"convert {split} (QCM-LEA, official layout)", *run)
        row("convert all three splits", *(sum(r[k] for r in runs) for k in range(3)))

        def questions() -> int:
            read = read_official(problems, splits, "test")
            return write_jsonl(tmp / "q.jsonl", (question_line(p, fmt) for p in read.problems))

        row("questions test", *timed(questions))

        def score() -> int:
            read = read_official(problems, splits, "test")
            result = score_answers(read.problems, read_answers(answers))
            write_json(tmp / "result.json", result.to_json(), indent=2)
            return result.count

        row("score test (read, extract, breakdown, write)", *timed(score))

        parquet = tmp / "test-00000-of-00001.parquet"
        n_images = write_hf_parquet(parquet, test_rows)
        mib = parquet.stat().st_size / 2**20
        print(f"\nparquet test split: {len(test_rows):,} rows, {n_images:,} images, {mib:.0f} MiB")
        print(f"{'unpacking':<46} {'images':>7} {'wall s':>7} {'CPU s':>7} {'images/s':>8}")

        def ours() -> int:
            return read_parquet([parquet], "test", tmp / "imgs").images_written

        first = timed(ours)
        row("ours: images written as they are", *first)
        _, wall, cpu = timed(ours)
        row("ours: again, identical images already there", n_images, wall, cpu)

        def baseline() -> int:
            out = tmp / "baseline"
            out.mkdir()
            table = pq.read_table(parquet, columns=["image"]).slice(0, BASELINE_ROWS)
            saved = 0
            for row_id, value in enumerate(table.column(0).to_pylist()):
                if value:
                    Image.open(io.BytesIO(value["bytes"])).save(out / f"test-{row_id}.png")
                    saved += 1
            return saved

        base = timed(baseline)
        row(f"baseline: decode + save again (PIL), {BASELINE_ROWS:,} rows", *base)
        speedup = (first[0] / first[1]) / (base[0] / base[1])
        print(f"speed-up in images/s: {speedup:.1f}x; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
