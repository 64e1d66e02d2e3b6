"""The review page at the paper's scale: 158,000 records, import once, then every page fast.

Records are built from the 90 real GPT-4 LLaVA samples (their questions and answers, so the
text lengths and the full-text index are realistic), 58K conversations / 23K details / 77K
complex-reasoning as in LLaVA-Instruct-158K, a flag on one record in twelve, 1% quarantined,
10% already decided. Prints, each against its naive baseline:
- import: seconds for JSON -> SQLite (records, flags, FTS5 index), one transaction;
- list pages (median ms over repeats): keyset paging vs LIMIT/OFFSET at the same depth, and
  FTS5 free text vs a LIKE scan; the whole page through HTTP (FastAPI + Jinja render).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from instructgen.files import write_json, write_jsonl
from instructgen.review import queries, store
from instructgen.review.app import create_app
from instructgen.review.queries import Filters

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
MIX = {"conversation": 58_000, "detail": 23_000, "complex_reasoning": 77_000}
FLAGS = ("short_answer", "coordinates_in_answer", "unseen_category:dog", "long_answer")
REPEATS = 15


def samples() -> dict[str, list[tuple[str, str]]]:
    """(question, answer) pairs of the real GPT-4 samples, per task."""
    names = {"conv": "conversation", "detail": "detail", "complex": "complex_reasoning"}
    by_task: dict[str, list[tuple[str, str]]] = {t: [] for t in MIX}
    for line in (SHARED / "llava/coco2014_val_gpt4_qa_30x3.jsonl").read_text().splitlines():
        s = json.loads(line)
        by_task[names[s["type"]]].append((s["instruction"], s["output"]))
    return by_task


def context(image_id: int, real: list[dict]) -> dict:
    """An ImageContext line for `image_id`, its captions and boxes from a real context."""
    c = real[image_id % len(real)]
    return {
        "image_id": image_id,
        "file_name": f"{image_id:012d}.jpg",
        "width": 640,
        "height": 480,
        "captions": c["captions"],
        "boxes": c["instances"],
    }


def make_sources(folder: Path) -> tuple[store.Sources, int]:
    rng = random.Random(0)
    pairs = samples()
    contexts = [
        json.loads(x)
        for x in (SHARED / "llava/caps_boxes_coco2014_val_80.jsonl").read_text().splitlines()
    ]
    records, quarantine, image_id = [], [], 0
    for task, n in MIX.items():
        for _ in range(n):
            image_id += 1
            turns = rng.sample(pairs[task], 3 if task == "conversation" else 1)
            conv = []
            for i, (q, a) in enumerate(turns):
                conv += [
                    {"from": "human", "value": ("<image>\n" if i == 0 else "") + q},
                    {"from": "gpt", "value": a},
                ]
            cid = f"coco-{image_id}-{task}"
            if rng.random() < 0.01:
                quarantine.append(
                    {
                        "custom_id": cid,
                        "task": task,
                        "image_id": image_id,
                        "reason": "finish_length",
                        "detail": "cut off",
                        "raw": turns[0][1][:200],
                    }
                )
                continue
            flags = [rng.choice(FLAGS)] if rng.random() < 1 / 12 else []
            records.append(
                {
                    "id": f"{image_id:012d}",
                    "image": f"{image_id:012d}.jpg",
                    "conversations": conv,
                    "custom_id": cid,
                    "task": task,
                    "flags": flags,
                }
            )
    write_json(folder / "llava_instruct.json", records)
    write_jsonl(folder / "quarantine.jsonl", quarantine)
    write_jsonl(folder / "contexts.jsonl", (context(i, contexts) for i in range(1, image_id + 1)))
    sources = store.Sources(
        folder / "llava_instruct.json", folder / "contexts.jsonl", folder / "quarantine.jsonl"
    )
    return sources, len(records) + len(quarantine)


def median_ms(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def offset_page(conn, filters: queries.Filters, offset: int) -> tuple[list, int]:
    """The naive baseline: LIMIT/OFFSET (walks every skipped row), with the same count."""
    where, params = queries._where(filters)
    sql = f"SELECT seq, key, snippet FROM records WHERE {where} ORDER BY seq LIMIT 50 OFFSET ?"
    return conn.execute(sql, [*params, offset]).fetchall(), queries.count(conn, filters)


def like_page(conn, word: str) -> tuple[list, int]:
    """The naive text search: LIKE over every stored record body, page and count."""
    source = "FROM records JOIN bodies USING (seq) WHERE original LIKE ?"
    rows = conn.execute(f"SELECT seq, key {source} ORDER BY seq LIMIT 50", (f"%{word}%",))
    return rows.fetchall(), conn.execute(f"SELECT count(*) {source}", (f"%{word}%",)).fetchone()[0]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources, total = make_sources(folder)
        mib = sources.records.stat().st_size / 2**20
        print(f"sources: {total:,} rows ({mib:,.0f} MiB llava_instruct.json)")
        conn = store.open_store(folder / "review.sqlite")
        t = time.perf_counter()
        report = store.import_sources(conn, sources)
        import_s = time.perf_counter() - t
        reopen_ms = median_ms(lambda: store.import_sources(conn, sources))
        print(
            f"import: {report.records:,} records + {report.quarantined:,} quarantined in "
            f"{import_s:.1f} s ({total / import_s:,.0f} rows/s); reopen, no re-import: "
            f"{reopen_ms:.1f} ms"
        )

        rng = random.Random(1)
        keys = [
            r[0] for r in conn.execute("SELECT key FROM records WHERE quarantine_reason IS NULL")
        ]
        for key in rng.sample(keys, len(keys) // 10):
            store.decide(conn, key, rng.choice(["accepted", "accepted", "rejected"]), "vague")

        title = "list page (50 rows + match count) at 158K"
        print(f"\n{title:52} {'ours ms':>9} {'OFFSET ms':>10} {'ratio':>7}")
        pending_details = Filters(task="detail", status="pending")
        cases = [
            ("first page, no filter", Filters(), 0.0),
            ("95% deep, no filter", Filters(), 0.95),
            ("95% deep, task=detail & status=pending", pending_details, 0.95),
            ("95% deep, flag=short_answer", Filters(flag="short_answer"), 0.95),
            (
                "95% deep, quarantine=finish_length",
                Filters(quarantine="finish_length"),
                0.95,
            ),
        ]
        for label, filters, depth in cases:
            offset = int(queries.count(conn, filters) * depth)
            after = offset_page(conn, filters, offset - 1)[0][0][0] if offset else None
            ours = median_ms(lambda f=filters, a=after: queries.list_page(conn, f, after=a))
            base = median_ms(lambda f=filters, o=offset: offset_page(conn, f, o))
            print(f"{label:52} {ours:9.1f} {base:10.1f} {base / ours:6.1f}x")
        word = "skateboard"
        ours = median_ms(lambda: queries.list_page(conn, Filters(q=word)))
        base = median_ms(lambda: like_page(conn, word))
        label = f"free text {word!r} (FTS5 vs LIKE scan)"
        print(f"{label:52} {ours:9.1f} {base:10.1f} {base / ours:6.1f}x")
        conn.close()

        client = TestClient(create_app(folder / "review.sqlite"))
        key = keys[len(keys) // 2]
        print(f"\n{'HTTP, full page render (TestClient)':52} {'ms':>9}")
        for label, url in [
            ("GET / (list, filters, counts)", "/"),
            (
                "GET /?status=pending&task=complex_reasoning",
                "/?status=pending&task=complex_reasoning",
            ),
            ("GET /?q=skateboard", "/?q=skateboard"),
            ("GET /records/<key> (record view)", f"/records/{key}"),
            ("GET /summary", "/summary"),
        ]:
            print(f"{label:52} {median_ms(lambda u=url: client.get(u)):9.1f}")


if __name__ == "__main__":
    main()
