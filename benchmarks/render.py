"""Render 158,000 requests (the paper's scale) from real COCO contexts; ours vs a naive baseline.

Real train2017-sample contexts are repeated with fresh image ids up to 158K / 3 tasks images.
Ours serializes each task's shared prefix once; the baseline json.dumps every full request.
Prints requests/s, output size and peak RSS for both. Target: 158K requests in <= 30 s.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from instructgen.coco import iter_contexts
from instructgen.contracts import TASKS, custom_id
from instructgen.files import write_jsonl
from instructgen.prompts import load_task_prompt
from instructgen.render import render_requests

REQUESTS = 158_000
ANN = Path(__file__).resolve().parents[2] / "shared/data/coco-mini/annotations"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_contexts(path: Path, n_images: int) -> None:
    real = list(iter_contexts(ANN / "captions_train2017.json", ANN / "instances_train2017.json"))
    rows = (replace(real[i % len(real)], image_id=i + 1).to_json() for i in range(n_images))
    write_jsonl(path, rows)


def naive(contexts: Path, out: Path) -> int:
    from instructgen.contracts import ImageContext

    prompts = [load_task_prompt(t) for t in TASKS]
    n = 0
    with open(out, "w") as f:
        for line in contexts.read_text().splitlines():
            ctx = ImageContext.from_json(json.loads(line))
            for p in prompts:
                body = {
                    "model": "gpt-4o",
                    "messages": p.messages(ctx),
                    "temperature": 1.0,
                    "max_tokens": 1024,
                }
                row = {
                    "custom_id": custom_id(ctx.image_id, p.task),
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def run_one(name: str, contexts: Path, out: Path) -> None:
    """Child process: render with one method, print requests, seconds and peak RSS as JSON."""
    t0 = time.perf_counter()
    n = render_requests(contexts, out).requests if name == "ours" else naive(contexts, out)
    print(json.dumps({"n": n, "seconds": time.perf_counter() - t0, "rss_mib": peak_rss_mib()}))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        contexts = tmp / "contexts.jsonl"
        make_contexts(contexts, REQUESTS // len(TASKS) + 1)
        results = {}
        for name in ("ours", "baseline"):
            out = tmp / f"{name}.jsonl"
            child = subprocess.run(
                [sys.executable, __file__, name, str(contexts), str(out)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[name] = json.loads(child.stdout) | {"mib": out.stat().st_size / 2**20}
        same = sha256(tmp / "ours.jsonl") == sha256(tmp / "baseline.jsonl")
    ours, base = results["ours"], results["baseline"]
    print(f"render: {ours['n']:,} requests from real COCO contexts (3 tasks)")
    print(f"{'':10}{'seconds':>10}{'requests/s':>14}{'output MiB':>12}{'peak RSS MiB':>14}")
    for name, r in results.items():
        rate = r["n"] / r["seconds"]
        print(f"{name:10}{r['seconds']:10.1f}{rate:14,.0f}{r['mib']:12,.0f}{r['rss_mib']:14,.0f}")
    print(
        f"speed-up over baseline: {base['seconds'] / ours['seconds']:.1f}x; "
        f"outputs byte-identical: {same}"
    )
    ok = ours["seconds"] <= 30
    print(f"target 158K in <= 30 s: {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok and same else 1)


if __name__ == "__main__":
    if len(sys.argv) == 4:
        run_one(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
