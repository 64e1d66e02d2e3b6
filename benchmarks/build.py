"""Build 158,000 responses (the paper's scale) into training data; ours vs a naive baseline.

Real train2017-sample contexts are repeated with fresh image ids up to 158K / 3 images, the
requests are rendered by `render_requests` (system prompt and seeds included, as in a real
run), and responses are synthesized from each context's captions and boxes in the formats
our prompts ask for, in three markdown styles, with about 6% failures and malformed replies.

Ours: `build` (envelope checks, per-task parsing, echo check, flags, quarantine, stats,
per-task files and the seeded merged file). Baseline: json.loads per line, a naive regex
split on Question:/Answer:, one json.dump at the end; no validation, no quarantine.
Each runs in a child process so its wall time and peak RSS are its own. Target: <= 60 s.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from instructgen.contracts import TASKS, ImageContext, custom_id
from instructgen.files import iter_jsonl, write_jsonl
from instructgen.generate.coco import iter_contexts
from instructgen.generate.render import render_requests

RESPONSES = 158_000
TARGET_S = 60.0
ANN = Path(__file__).resolve().parents[2] / "shared/data/coco-mini/annotations"

QUESTIONS = (
    "What is the {c} doing in the picture?",
    "How many {c}s can be seen in the image?",
    "Where is the {c} located in the scene?",
    "What color is the {c}?",
    "What is the setting of this photo?",
    "Why might the {c} be there?",
)
FILLER = (
    "The scene looks calm and ordinary, typical of everyday life.",
    "Light falls evenly across the frame, so the details are easy to make out.",
    "Nothing in the picture suggests that anything unusual is happening.",
    "The arrangement of the objects gives a good sense of how the space is used.",
)


def synth_response(ctx: ImageContext, task: str, rng: random.Random) -> tuple[str, str]:
    """(content, finish_reason) of one synthetic reply in our response format."""
    cats = sorted({b.category for b in ctx.boxes}) or ["scene"]
    caps = list(ctx.captions)
    fault = rng.random()
    if fault < 0.01:
        return caps[0][:60], "length"
    if fault < 0.02:
        return "", "stop"
    if fault < 0.025:
        return "I'm sorry, but I can't help with that.", "stop"
    if fault < 0.035 and task != "detail":
        return (
            f"Question: What is in the image?\nQuestion: {QUESTIONS[0].format(c=cats[0])}",
            "stop",
        )
    if task == "detail":
        first = " ".join(caps[:3])
        second = " ".join(f"A {c} can be seen in the picture." for c in cats[:4])
        return f"{first} {rng.choice(FILLER)}\n\n{second} {' '.join(FILLER[:3])}", "stop"
    style = rng.randrange(3)
    labels = [
        ("Question: ", "Answer: "),
        ("**Question {n}:** ", "**Answer {n}:** "),
        ("Q{n}. ", "A{n}. "),
    ][style]
    n_turns = 1 if task == "complex_reasoning" else rng.randint(3, 6)
    parts = []
    for n in range(1, n_turns + 1):
        question = rng.choice(QUESTIONS).format(c=rng.choice(cats))
        answer = f"{rng.choice(caps)} {rng.choice(FILLER)}"
        if task == "complex_reasoning":
            answer += "\n\n" + " ".join(FILLER) + " " + " ".join(caps[1:4])
        parts.append(f"{labels[0].format(n=n)}{question}\n{labels[1].format(n=n)}{answer}")
    closing = "\n\nI hope this helps!" if style == 1 else ""
    return "\n\n".join(parts) + closing, "stop"


def make_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """contexts.jsonl, requests.jsonl (rendered) and responses.jsonl for RESPONSES requests."""
    real = list(iter_contexts(ANN / "captions_train2017.json", ANN / "instances_train2017.json"))
    n_images = RESPONSES // len(TASKS) + 1
    contexts = [replace(real[i % len(real)], image_id=i + 1) for i in range(n_images)]
    paths = folder / "contexts.jsonl", folder / "requests.jsonl", folder / "responses.jsonl"
    write_jsonl(paths[0], (c.to_json() for c in contexts))
    render_requests(paths[0], paths[1])
    rng = random.Random(0)

    def lines():
        for n, (ctx, task) in enumerate((c, t) for c in contexts for t in TASKS):
            if n == RESPONSES:
                return
            cid = custom_id(ctx.image_id, task)
            if rng.random() < 0.02:
                error = {"code": "server_error", "message": "The server had an error"}
                yield {"id": f"b{n}", "custom_id": cid, "response": None, "error": error}
                continue
            content, finish = synth_response(ctx, task, rng)
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
            body = {
                "id": f"c{n}",
                "object": "chat.completion",
                "model": "gpt-4o",
                "choices": [choice],
                "usage": {"prompt_tokens": 2000, "completion_tokens": 300},
            }
            yield {
                "id": f"b{n}",
                "custom_id": cid,
                "response": {"status_code": 200, "body": body},
                "error": None,
            }

    write_jsonl(paths[2], lines())
    return paths


def naive_build(responses: Path, out: Path) -> int:
    """The baseline: parse every line, split on labels with one regex, dump one list."""
    import re

    split = re.compile(r"^(?:Question|Answer):\s*", re.M)
    records = []
    for _, line in iter_jsonl(responses):
        if not line.get("response"):
            continue
        text = line["response"]["body"]["choices"][0]["message"]["content"]
        parts = [p.strip() for p in split.split(text) if p.strip()]
        turns = [
            {"from": "human" if i % 2 == 0 else "gpt", "value": p} for i, p in enumerate(parts)
        ]
        records.append({"id": line["custom_id"], "conversations": turns})
    random.Random(0).shuffle(records)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(records, f)
    return len(records)


def timed_child(code: str) -> tuple[float, float, str]:
    """Run `code` in a fresh interpreter; (wall s, peak RSS MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {code}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out.strip()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        contexts, requests, responses = make_inputs(folder)
        sizes = {p.name: p.stat().st_size / 2**20 for p in (requests, responses)}
        print(
            f"inputs: {RESPONSES:,} responses ({sizes['responses.jsonl']:.0f} MiB), requests "
            f"{sizes['requests.jsonl']:.0f} MiB, made in {time.perf_counter() - t0:.1f} s"
        )
        ours = timed_child(
            "from pathlib import Path; from instructgen.curate.build import build; "
            f"s = build(Path({str(responses)!r}), Path({str(requests)!r}), "
            f"Path({str(contexts)!r}), Path({str(folder / 'out')!r})); "
            "print(s['records']['total'], s['quarantined']['total'])"
        )
        base = timed_child(
            "from pathlib import Path; import sys; "
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import build as b; "
            f"print(b.naive_build(Path({str(responses)!r}), Path({str(folder / 'naive.json')!r})))"
        )
    records, quarantined = map(int, ours[2].split())
    print(f"{'':10}{'wall s':>9}{'responses/s':>13}{'peak RSS MiB':>14}  output")
    print(
        f"{'build':10}{ours[0]:9.1f}{RESPONSES / ours[0]:13,.0f}{ours[1]:14.0f}  "
        f"{records:,} records + {quarantined:,} quarantined (+ stats, flags, per-task files)"
    )
    print(
        f"{'baseline':10}{base[0]:9.1f}{RESPONSES / base[0]:13,.0f}{base[1]:14.0f}  "
        f"{int(base[2]):,} records, no validation or quarantine"
    )
    print(f"ratio build/baseline: time x{ours[0] / base[0]:.2f}, peak RSS x{ours[1] / base[1]:.2f}")
    verdict = "met" if ours[0] <= TARGET_S else "MISSED"
    print(f"target: {RESPONSES:,} responses in <= {TARGET_S:.0f} s: {verdict} ({ours[0]:.1f} s)")


if __name__ == "__main__":
    main()
