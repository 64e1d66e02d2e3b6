"""Render 158,000 requests (the paper's scale) from real COCO contexts; ours vs a naive baseline.

Real train2017-sample contexts are repeated with fresh image ids up to 158K / 3 tasks images.
Ours serializes each task's shared prefix once; the baseline json.dumps every full request.
Prints requests/s, output size and peak RSS for both. Target: 158K requests in <= 30 s.

Then the image modes on the same contexts, with the sample's real JPEGs: `url` and `inline` at
768 px (and at 512 px, where every image is decoded, shrunk and encoded again), each beside
text-only on the same images; the baseline builds each request's image part again for every
task. Prints requests/s and the size of requests.jsonl per 1,000 images.
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

from instructgen.contracts import TASKS, custom_id
from instructgen.files import write_jsonl
from instructgen.generate.coco import iter_contexts
from instructgen.generate.images import ImageInput
from instructgen.generate.prompts import load_task_prompt
from instructgen.generate.render import render_requests

REQUESTS = 158_000
ANN = Path(__file__).resolve().parents[2] / "shared/data/coco-mini/annotations"
IMAGES = ANN.parent / "train2017"
IMAGE_MODES = {  # mode -> (images rendered, ImageInput arguments)
    "none": (3_000, None),
    "url": (3_000, {"mode": "url"}),
    "inline-768": (300, {"mode": "inline", "images_dir": IMAGES, "max_side": 768}),
    "inline-512": (300, {"mode": "inline", "images_dir": IMAGES, "max_side": 512}),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_contexts(path: Path, n_images: int) -> None:
    real = list(iter_contexts(ANN / "captions_train2017.json", ANN / "instances_train2017.json"))
    rows = (replace(real[i % len(real)], image_id=i + 1).to_json() for i in range(n_images))
    write_jsonl(path, rows)


def image_input(mode: str) -> ImageInput | None:
    args = IMAGE_MODES[mode][1] if mode in IMAGE_MODES else None
    return ImageInput(**args) if args else None


def naive(contexts: Path, out: Path, image: ImageInput | None = None) -> int:
    from instructgen.contracts import ImageContext

    prompts = [load_task_prompt(t, image_attached=image is not None) for t in TASKS]
    n = 0
    with open(out, "w") as f:
        for line in contexts.read_text().splitlines():
            ctx = ImageContext.from_json(json.loads(line))
            for p in prompts:
                part = image.part(ctx) if image else None
                body = {
                    "model": "gpt-4o",
                    "messages": p.messages(ctx, part),
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


def run_one(name: str, contexts: Path, out: Path, mode: str = "none") -> None:
    """Child process: render with one method, print requests, seconds and peak RSS as JSON."""
    image = image_input(mode)
    t0 = time.perf_counter()
    if name == "ours":
        n = render_requests(contexts, out, image=image).requests
    else:
        n = naive(contexts, out, image)
    print(json.dumps({"n": n, "seconds": time.perf_counter() - t0, "rss_mib": peak_rss_mib()}))


def child(name: str, contexts: Path, out: Path, mode: str = "none") -> dict:
    """Run one renderer in a fresh process; its figures plus the output size."""
    result = subprocess.run(
        [sys.executable, __file__, name, str(contexts), str(out), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout) | {"mib": out.stat().st_size / 2**20}


def image_modes(tmp: Path) -> bool:
    """Each image mode beside text-only on the same images; True if outputs match the baseline."""
    print("\nimage modes (real COCO JPEGs for inline), ours vs baseline (image part per request)")
    head = f"{'mode':12}{'images':>8}{'requests/s':>12}{'baseline/s':>12}"
    print(head + f"{'MiB per 1K images':>19}{'vs text':>9}")
    text_mib = None
    all_same = True
    for mode, (n_images, _) in IMAGE_MODES.items():
        contexts = tmp / f"contexts-{n_images}.jsonl"
        if not contexts.exists():
            make_contexts(contexts, n_images)
        ours = child("ours", contexts, tmp / "ours.jsonl", mode)
        base = child("baseline", contexts, tmp / "baseline.jsonl", mode)
        all_same &= sha256(tmp / "ours.jsonl") == sha256(tmp / "baseline.jsonl")
        per_1k = ours["mib"] * 1000 / n_images
        text_mib = text_mib or per_1k
        print(
            f"{mode:12}{n_images:8,}{ours['n'] / ours['seconds']:12,.0f}"
            f"{base['n'] / base['seconds']:12,.0f}{per_1k:19,.1f}{per_1k / text_mib:8.1f}x"
        )
        for name in ("ours.jsonl", "baseline.jsonl"):
            (tmp / name).unlink()
    print(f"image-mode outputs byte-identical to the baseline: {all_same}")
    return all_same


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
            results[name] = child(name, contexts, tmp / f"{name}.jsonl")
        same = sha256(tmp / "ours.jsonl") == sha256(tmp / "baseline.jsonl")
        for name in ("ours", "baseline"):
            (tmp / f"{name}.jsonl").unlink()
        ours, base = results["ours"], results["baseline"]
        print(f"render: {ours['n']:,} requests from real COCO contexts (3 tasks)")
        print(f"{'':10}{'seconds':>10}{'requests/s':>14}{'output MiB':>12}{'peak RSS MiB':>14}")
        for name, r in results.items():
            rate = r["n"] / r["seconds"]
            print(
                f"{name:10}{r['seconds']:10.1f}{rate:14,.0f}{r['mib']:12,.0f}{r['rss_mib']:14,.0f}"
            )
        print(
            f"speed-up over baseline: {base['seconds'] / ours['seconds']:.1f}x; "
            f"outputs byte-identical: {same}"
        )
        ok = ours["seconds"] <= 30
        print(f"target 158K in <= 30 s: {'met' if ok else 'MISSED'}")
        images_same = image_modes(tmp)
    sys.exit(0 if ok and same and images_same else 1)


if __name__ == "__main__":
    if len(sys.argv) == 5:
        run_one(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
    else:
        main()
