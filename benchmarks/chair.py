"""CHAIR over 15,000 records: ours (one longest-match pass per text) vs a per-category regex scan.

Data: LLaVA's 90 real GPT-4 answers to the qa90 questions (examples/llava-bench-qa90,
committed), turned into LLaVA records (question -> answer) and repeated in rotation to 15,000
records; ground truth from the real caps_boxes contexts of their COCO val2014 images.

Ours: `chair_of_llava` end to end (read the JSON, score every assistant turn, keep every
mention and its span) plus writing chair.json. Baseline: for each record, one regex per COCO
category over the whole text (`\\b(name|synonym|plural)\\b`, the usual way to write it); it
finds which categories are named, but not how often, and reads "hot dog" as a dog too.
Target: seconds.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from instructgen.curate.chair import VOCABULARY, chair_of_llava, read_truths

RECORDS = 15_000
QA90 = Path(__file__).resolve().parents[1] / "examples" / "llava-bench-qa90"


def make_records(out: Path) -> int:
    """A LLaVA JSON of RECORDS records from the 90 real answers, in rotation; returns words."""
    questions = {}
    for line in (QA90 / "qa90_questions.jsonl").read_text().splitlines():
        q = json.loads(line)
        questions[q["question_id"]] = q
    answers = [
        json.loads(line) for line in (QA90 / "qa90_gpt4_answer.jsonl").read_text().splitlines()
    ]
    records, words = [], 0
    for n in range(RECORDS):
        a = answers[n % len(answers)]
        q = questions[a["question_id"]]
        records.append(
            {
                "id": f"{n:06d}",
                "image": q["image"],
                "task": q["category"],
                "conversations": [
                    {"from": "human", "value": "<image>\n" + q["text"]},
                    {"from": "gpt", "value": a["text"]},
                ],
            }
        )
        words += len(a["text"].split())
    out.write_text(json.dumps(records))
    return words


def naive_chair(records_path: Path, contexts: Path) -> dict:
    """Per record, one regex per category; CHAIR over the categories found (not mentions)."""
    names: dict[str, list[str]] = {}
    for name, category in VOCABULARY.items():
        if category is not None:
            names.setdefault(category, []).append(" ".join(name))
    patterns = {
        c: re.compile(r"\b(?:" + "|".join(map(re.escape, ws)) + r")\b") for c, ws in names.items()
    }
    truths = read_truths(contexts)
    found = hallucinated = hallucinating = 0
    for record in json.loads(records_path.read_text()):
        text = " ".join(t["value"] for t in record["conversations"] if t["from"] == "gpt").lower()
        named = {c for c, p in patterns.items() if p.search(text)}
        absent = named - truths.of(record["image"])
        found += len(named)
        hallucinated += len(absent)
        hallucinating += bool(absent)
    return {"chair_i": hallucinated / found, "chair_s": hallucinating / RECORDS}


def main() -> None:
    contexts = QA90 / "caps_boxes_coco2014_val_80.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.json"
        words = make_records(data)
        start = time.perf_counter()
        truths = read_truths(contexts)
        report = chair_of_llava(data, truths)
        with open(Path(tmp) / "chair.json", "w", encoding="utf-8") as f:
            report.write(f, str(data))
        ours = time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_chair(data, contexts)
        baseline = time.perf_counter() - start
    figures = report.figures()["overall"]
    print(f"{RECORDS:,} records, {words:,} answer words, {figures['mentions']:,} object mentions")
    print(f"{'':10} {'seconds':>8} {'records/s':>10} {'CHAIR_i':>8} {'CHAIR_s':>8}")
    print(
        f"{'ours':10} {ours:8.2f} {RECORDS / ours:10,.0f} "
        f"{figures['chair_i']:8.4f} {figures['chair_s']:8.4f}  (mentions, spans, chair.json)"
    )
    print(
        f"{'baseline':10} {baseline:8.2f} {RECORDS / baseline:10,.0f} "
        f"{naive['chair_i']:8.4f} {naive['chair_s']:8.4f}  (categories found, no spans)"
    )
    print(f"speed-up {baseline / ours:.1f}x; target: seconds ({'met' if ours < 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
