"""Export 158,000 LLaVA records (the paper's scale) to a Hugging Face dataset folder.

Synthetic data: 52,667 distinct JPEG files (random 96 x 96 noise, about 7.6 KB each,
written once to a temp folder) and 158,001 records, three per image, shaped like a build's output
(a conversation of 4 turns, a detail description, a reasoning question).

Three runs, each in its own child process so its wall time and peak RSS are its own:
- ours: `export` (streamed, checked, shards of 500 MiB with the original bytes);
- baseline, the naive way: every row with its image bytes in one list,
  `datasets.Dataset.from_list` then `to_parquet` (memory grows with the data);
- floor: the same image bytes read and appended to one file, no parquet, no checks: what
  "copying the images at disk speed" costs on this machine.
Reports records/s, MB/s of image bytes, peak RSS, and checks both parquet outputs hold the
same rows.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

RECORDS = 158_001
SIDE = 96


def make_images(folder: Path, n: int) -> list[str]:
    """Write n distinct noise JPEGs (noise does not compress: parquet cannot shrink them)."""
    from PIL import Image

    rng = random.Random(0)
    names = []
    for i in range(n):
        name = f"{i:012d}.jpg"
        noise = Image.frombytes("RGB", (SIDE, SIDE), rng.randbytes(SIDE * SIDE * 3))
        buf = BytesIO()
        noise.save(buf, "JPEG", quality=85)
        (folder / name).write_bytes(buf.getvalue())
        names.append(name)
    return names


def make_records(names: list[str], n: int) -> list[dict]:
    rng = random.Random(1)
    words = ("the", "a", "dog", "cat", "person", "table", "street", "car", "kite", "snow")

    def sentence(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    records = []
    for i in range(n):
        image = names[i // 3]
        task = ("conversation", "detail", "complex_reasoning")[i % 3]
        turns = 4 if task == "conversation" else 2
        conversations = []
        for t in range(turns):
            text = sentence(8) if t % 2 == 0 else " ".join(sentence(12) for _ in range(4))
            if t == 0:
                text = f"<image>\n{text}" if i % 2 else f"{text}\n<image>"
            conversations.append({"from": "human" if t % 2 == 0 else "gpt", "value": text})
        records.append(
            {"id": image[:-4], "image": image, "conversations": conversations, "task": task}
        )
    return records


def ours(data: Path, images: Path, out: Path) -> None:
    from instructgen.curate.export import export
    from instructgen.curate.export_card import Provenance
    from instructgen.curate.export_hf import HfWriter

    export(data, out, lambda f: HfWriter(f, Provenance(), "cc-by-4.0", str(out)), images)


def baseline(data: Path, images: Path, out: Path) -> None:
    import datasets

    from instructgen.curate.export import check_record
    from instructgen.curate.export_hf import FEATURES, hf_row

    rows = []
    for n, obj in enumerate(json.loads(data.read_text())):
        record = check_record(obj, f"record {n}")
        rows.append(hf_row(record, (images / record.image).read_bytes()))
    out.mkdir()
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    ds.to_parquet(str(out / "train.parquet"))


def floor(data: Path, images: Path, out: Path) -> None:
    with open(out, "wb") as f:
        for obj in json.loads(data.read_text()):
            f.write((images / obj["image"]).read_bytes())


def peak_rss_mib() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would count the parent's pages
    held at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(which: str, data: Path, images: Path, out: Path) -> dict:
    """Run one side in a fresh process; its wall seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, which, str(data), str(images), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    return {"wall": wall, "rss_mib": float(result.stdout.split()[-1])}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        t = time.perf_counter()
        names = make_images(images, (RECORDS + 2) // 3)
        records = make_records(names, RECORDS)
        data = tmp / "llava_instruct.json"
        data.write_text(json.dumps(records))
        image_mb = sum((images / r["image"]).stat().st_size for r in records[::3]) * 3 / 1e6
        del records
        print(
            f"setup: {len(names)} JPEGs, {RECORDS} records, "
            f"{data.stat().st_size / 1e6:.0f} MB of JSON, {image_mb:.0f} MB of image bytes "
            f"in rows ({time.perf_counter() - t:.1f} s)"
        )
        results = {
            "ours (export, streamed)": child("ours", data, images, tmp / "ours"),
            "baseline (from_list + to_parquet)": child("baseline", data, images, tmp / "naive"),
            "floor (read + append bytes)": child("floor", data, images, tmp / "floor.bin"),
        }
        import pyarrow.parquet as pq

        ours_rows = pq.ParquetDataset(tmp / "ours" / "data").read(columns=["id"]).column("id")
        naive_rows = pq.read_table(tmp / "naive" / "train.parquet", columns=["id"]).column("id")
        assert ours_rows.to_pylist() == naive_rows.to_pylist(), "outputs differ"
        ours_mb = sum(p.stat().st_size for p in (tmp / "ours" / "data").iterdir()) / 1e6
        print(f"\noutputs: same {len(ours_rows)} rows in order; ours {ours_mb:.0f} MB of parquet")
        print(f"\n| {'run':36} | seconds | records/s | image MB/s | peak RSS MiB |")
        print(f"|{'-' * 38}|---------|-----------|------------|--------------|")
        for name, r in results.items():
            print(
                f"| {name:36} | {r['wall']:7.1f} | {RECORDS / r['wall']:9,.0f} | "
                f"{image_mb / r['wall']:10.1f} | {r['rss_mib']:12.0f} |"
            )
        base = results["baseline (from_list + to_parquet)"]
        mine = results["ours (export, streamed)"]
        print(
            f"\nours vs baseline: {base['wall'] / mine['wall']:.2f}x the speed, "
            f"{mine['rss_mib'] / base['rss_mib']:.2f}x the memory"
        )


if __name__ == "__main__":
    if len(sys.argv) == 5:
        side = {"ours": ours, "baseline": baseline, "floor": floor}[sys.argv[1]]
        side(*(Path(a) for a in sys.argv[2:]))
        print(peak_rss_mib())
    else:
        main()
