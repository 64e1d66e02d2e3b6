"""responses.jsonl + requests.jsonl + contexts.jsonl -> LLaVA training JSON, quarantine, stats.

Streaming: responses are read line by line and each record is written as soon as it is
parsed; only a small index (custom_id, offset, length) stays in memory to shuffle the merged
file. Every request ends up either as a record or as a quarantine line, and every response
line that matches no request (or repeats one) is quarantined too, so that

    records + quarantined = requests + unknown_responses + duplicate_responses

holds exactly; `build` checks it before any output is moved into place. All outputs are
written to temp files first and renamed into place together at the end (stats.json last), so
a failure anywhere leaves the previous build's files as they were.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import zlib
from array import array
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from instructgen.contracts import IMAGE_TOKEN, TASKS, split_custom_id
from instructgen.curate.chair import ChairReport, chair_table, ground_truth, score_record
from instructgen.curate.parse import (
    REASONS,
    Rejection,
    Turn,
    answer_flags,
    parse_response,
    present_categories,
    system_fragments,
    word_count,
)
from instructgen.errors import InputError, InstructgenError
from instructgen.files import atomic_writer, iter_jsonl, read_json, require_file
from instructgen.generate.images import IMAGE_MODES, image_mode
from instructgen.generate.prompts import INSTRUCTIONS_DIR, read_instructions
from instructgen.generate.template_backend import BACKEND as TEMPLATE_BACKEND

MERGED_NAME = "llava_instruct.json"
CHAIR_NAME = "chair.json"
INVARIANT = "records + quarantined = requests + unknown_responses + duplicate_responses"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What build keeps of one request: its task, image, system prompt (an index) and how the
    model was shown the image (IMAGE_MODES)."""

    task: str
    image_id: int
    system: int
    image_mode: str


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What build keeps of one image context: its file name, the categories it shows (for
    the `unseen_category` flag) and its CHAIR ground truth."""

    file_name: str
    present: frozenset[str]
    truth: frozenset[str]


@dataclass(frozen=True, slots=True)
class Extracted:
    """The assistant text of one response line, or why there is none usable."""

    text: str
    rejection: Rejection | None = None


@dataclass
class Requests:
    """The requests file, reduced: custom_id -> RequestInfo, and echo fragments per prompt."""

    by_id: dict[str, RequestInfo]
    fragments: list[tuple[str, ...]]


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        # Newlines, not tokens.message_text's spaces: a part ends a sentence for system_fragments.
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return "\n".join(t for t in texts if isinstance(t, str))
    return content if isinstance(content, str) else ""


def load_requests(path: Path) -> Requests:
    """Read a Batch API request file; a bad or repeated custom_id raises InputError."""
    by_id: dict[str, RequestInfo] = {}
    systems: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        cid = obj.get("custom_id")
        parsed = split_custom_id(cid) if isinstance(cid, str) else None
        if parsed is None:
            raise InputError(
                f"{path}:{lineno}: custom_id {cid!r} is not coco-<image_id>-<task> "
                f"with a task among {', '.join(TASKS)}"
            )
        if cid in by_id:
            raise InputError(f"{path}:{lineno}: custom_id {cid} appears twice; ids must be unique")
        body = obj.get("body")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            raise InputError(f"{path}:{lineno}: {cid}: not a Batch API request (no body.messages)")
        for n, m in enumerate(messages):
            if not isinstance(m, dict):
                raise InputError(
                    f"{path}:{lineno}: {cid}: body.messages[{n}] is {type(m).__name__}, "
                    "not a message object with role and content"
                )
        system = next((_message_text(m) for m in messages if m.get("role") == "system"), "")
        by_id[cid] = RequestInfo(
            parsed[1], parsed[0], systems.setdefault(system, len(systems)), image_mode(messages)
        )
    return Requests(by_id, [system_fragments(s) for s in systems])


def load_contexts(path: Path) -> dict[int, ImageInfo]:
    """image_id -> ImageInfo from contexts.jsonl; a repeated image_id raises InputError."""
    images = {}
    first_line: dict[int, int] = {}
    for lineno, obj in iter_jsonl(path):
        try:
            image_id, file_name = int(obj["image_id"]), str(obj["file_name"])
            captions = tuple(str(c) for c in obj["captions"])
            boxes = {str(b["category"]) for b in obj.get("boxes") or ()}
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"{path}:{lineno}: not an image context ({type(e).__name__}: {e})"
            ) from None
        if image_id in first_line:
            raise InputError(
                f"{path}:{lineno}: image_id {image_id} already appears at {path}:"
                f"{first_line[image_id]}; give each image one context"
            )
        first_line[image_id] = lineno
        images[image_id] = ImageInfo(
            file_name, present_categories(captions, boxes), ground_truth(captions, boxes)
        )
    return images


def extract_text(line: dict) -> Extracted:
    """The assistant message of one Batch API output line, or the envelope's rejection."""
    error, response = line.get("error"), line.get("response")
    if error or not isinstance(response, dict):
        message = _error_message(error) or "the response line has neither response nor error"
        return Extracted(message, Rejection("failed_request", f"request failed: {message}"))
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    status = response.get("status_code", 200)
    if status != 200:
        message = _error_message(body.get("error")) or json.dumps(body)[:500]
        return Extracted(message, Rejection("failed_request", f"HTTP {status}: {message}"))
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Extracted("", Rejection("failed_request", "the response body has no choices"))
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    finish = choice.get("finish_reason")
    if message.get("refusal"):
        return Extracted(str(message["refusal"]), Rejection("refusal", "the model refused"))
    if finish == "length":
        return Extracted(text, Rejection("finish_length", "cut off at max_tokens"))
    if finish == "content_filter":
        return Extracted(text, Rejection("content_filter", "stopped by the content filter"))
    return Extracted(text)


def response_model(line: dict) -> str | None:
    """The `model` named by a response line's body (who wrote the answer), or None."""
    response = line.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return ": ".join(str(x) for x in (code, message) if x)
    return str(error) if error else ""


def draw(seed: int, custom_id: str) -> int:
    """A stable pseudo-random 32-bit number for one record (same seed and id, same number)."""
    return zlib.crc32(f"{seed}:{custom_id}".encode())


def make_record(
    cid: str,
    info: RequestInfo,
    image: ImageInfo,
    turns: tuple[Turn, ...],
    flags: list[str],
    instructions: tuple[str, ...],
    seed: int,
    backend: str | None = None,
) -> dict:
    """One LLaVA record: `<image>` once in the first human turn, before or after it (seeded).

    `backend` labels a record that no model wrote (the template baseline's "template").
    """
    h = draw(seed, cid)
    if info.task == "detail":
        turns = (Turn(instructions[h % len(instructions)], turns[0].answer),)
    first = turns[0].question
    opening = f"{IMAGE_TOKEN}\n{first}" if (h >> 16) & 1 else f"{first}\n{IMAGE_TOKEN}"
    conversations = []
    for n, turn in enumerate(turns):
        conversations.append({"from": "human", "value": opening if n == 0 else turn.question})
        conversations.append({"from": "gpt", "value": turn.answer})
    record = {
        "id": f"{info.image_id:012d}",
        "image": image.file_name,
        "conversations": conversations,
        "custom_id": cid,
        "task": info.task,
        "image_mode": info.image_mode,
        "flags": flags,
    }
    if backend:
        record["backend"] = backend
    return record


def quarantine_line(
    cid: str,
    task: str | None,
    image_id: int | None,
    reason: str,
    detail: str,
    raw: str,
    image_mode: str | None = None,
) -> dict:
    """One quarantine.jsonl object (see DESIGN.md); `image_mode` as on records."""
    return {
        "custom_id": cid,
        "task": task,
        "image_id": image_id,
        "image_mode": image_mode,
        "reason": reason,
        "detail": detail,
        "raw": raw,
    }


@dataclass
class StatsCollector:
    """Running counts for stats.json; answer lengths are kept as compact int arrays."""

    models: Counter = field(default_factory=Counter)  # body.model -> response lines
    records: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    quarantined_per_task: Counter = field(default_factory=Counter)
    flags: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)  # records per image mode
    unseen_categories: Counter = field(default_factory=Counter)
    turns: array = field(default_factory=lambda: array("I"))
    words: dict[str, array] = field(default_factory=lambda: {t: array("I") for t in TASKS})
    chair: ChairReport = field(default_factory=ChairReport)

    def add_record(self, info: RequestInfo, turns: tuple[Turn, ...], flags: list[str]) -> None:
        task = info.task
        self.records[task] += 1
        self.image_modes[info.image_mode] += 1
        if task == "conversation":
            self.turns.append(len(turns))
        self.words[task].extend(word_count(t.answer) for t in turns)
        for flag in flags:
            name, _, detail = flag.partition(":")
            self.flags[name] += 1
            if name == "unseen_category":
                self.unseen_categories[detail] += 1

    def add_quarantined(self, task: str | None, reason: str) -> None:
        self.quarantined[reason] += 1
        self.quarantined_per_task[task or "unknown"] += 1


def summarize(values: array) -> dict:
    """count, mean, p50, p95 and max of a list of integers (nearest-rank percentiles)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> int:
        return ordered[max(0, -(-n * p // 100) - 1)]

    return {
        "count": n,
        "mean": round(sum(ordered) / n, 2),
        "p50": rank(50),
        "p95": rank(95),
        "max": ordered[-1],
    }


def build(
    responses_path: Path,
    requests_path: Path,
    contexts_path: Path,
    out_dir: Path,
    seed: int = 0,
    instructions_dir: Path = INSTRUCTIONS_DIR,
) -> dict:
    """Write OUT/<task>.json, OUT/llava_instruct.json, OUT/quarantine.jsonl, OUT/chair.json
    (CHAIR of every record, as `instructgen chair` writes it), OUT/stats.json.

    Returns the stats dict (also written as stats.json). Raises InstructgenError when the
    inputs disagree (a request whose image has no context) or the invariant does not hold.
    """
    require_file(responses_path)
    instructions = read_instructions(Path(instructions_dir) / "detail.txt")
    requests = load_requests(requests_path)
    images = load_contexts(contexts_path)
    for cid, info in requests.by_id.items():
        if info.image_id not in images:
            raise InputError(
                f"{requests_path}: {cid}: image {info.image_id} is not in {contexts_path}; "
                "pass the contexts.jsonl these requests were rendered from"
            )
    out_dir = Path(out_dir)
    stats = StatsCollector()
    index: list[tuple[str, int, int, int]] = []  # (custom_id, task index, offset, length)
    answered: dict[str, int] = {}  # custom_id -> line of its first response
    unknown = duplicates = 0
    # Every output goes to a temp file; the stack renames them only if all succeeded, in the
    # reverse order of entry: stats.json, entered first, is renamed last.
    with ExitStack() as stack:
        stats_file = stack.enter_context(atomic_writer(out_dir / "stats.json"))
        task_files = [  # read back (w+b) to build the merged file before anything is renamed
            stack.enter_context(atomic_writer(out_dir / f"{t}.json", "w+b")) for t in TASKS
        ]
        offsets = [2] * len(TASKS)  # after the opening "[\n"
        for f in task_files:
            f.write(b"[\n")
        quarantine = stack.enter_context(atomic_writer(out_dir / "quarantine.jsonl"))
        chair_file = stack.enter_context(atomic_writer(out_dir / CHAIR_NAME))
        merged = stack.enter_context(atomic_writer(out_dir / MERGED_NAME, "wb"))

        def reject(cid: str, info: RequestInfo | None, reason: str, detail: str, raw: str):
            parsed_id = split_custom_id(cid)
            task, image_id = (
                (info.task, info.image_id)
                if info
                else (parsed_id[1], parsed_id[0])
                if parsed_id
                else (None, None)
            )
            mode = info.image_mode if info else None  # a response to no request has none
            row = quarantine_line(cid, task, image_id, reason, detail, raw, mode)
            quarantine.write(json.dumps(row, ensure_ascii=False) + "\n")
            stats.add_quarantined(task, reason)

        for lineno, line in iter_jsonl(responses_path):
            cid = line.get("custom_id")
            if not isinstance(cid, str):
                raise InputError(
                    f"{responses_path}:{lineno}: no custom_id; not a Batch API output line"
                )
            extracted = extract_text(line)
            model = response_model(line)
            if model is not None:
                stats.models[model] += 1
            info = requests.by_id.get(cid)
            if info is None:
                unknown += 1
                reject(
                    cid,
                    None,
                    "unknown_request",
                    f"no request has this custom_id ({requests_path})",
                    extracted.text,
                )
                continue
            if cid in answered:
                duplicates += 1
                reject(
                    cid,
                    info,
                    "duplicate",
                    f"a response for this custom_id came earlier (line {answered[cid]})",
                    extracted.text,
                )
                continue
            answered[cid] = lineno
            parsed = extracted.rejection or parse_response(
                info.task, extracted.text, requests.fragments[info.system]
            )
            if isinstance(parsed, Rejection):
                reject(cid, info, parsed.reason, parsed.detail, extracted.text)
                continue
            image = images[info.image_id]
            flags = answer_flags(info.task, parsed, image.present)
            backend = TEMPLATE_BACKEND if line.get("backend") == TEMPLATE_BACKEND else None
            record = make_record(cid, info, image, parsed, flags, instructions, seed, backend)
            t = TASKS.index(info.task)
            data = json.dumps(record, ensure_ascii=False).encode()
            if offsets[t] > 2:
                task_files[t].write(b",\n")
                offsets[t] += 2
            task_files[t].write(data)
            index.append((cid, t, offsets[t], len(data)))
            offsets[t] += len(data)
            stats.add_record(info, parsed, flags)
            answers = [(2 * n + 1, turn.answer) for n, turn in enumerate(parsed)]  # gpt turns
            stats.chair.add(
                score_record(
                    record["id"], image.file_name, info.task, answers, image.truth, custom_id=cid
                )
            )

        for cid, info in requests.by_id.items():
            if cid not in answered:
                reject(cid, info, "failed_request", "no response", "")
        for f in task_files:
            f.write(b"\n]\n")
        invariant = _check_invariant(stats, len(requests.by_id), unknown, duplicates)
        _write_merged(merged, task_files, index, seed)
        result = _stats_json(stats, invariant, seed, responses_path, requests_path, contexts_path)
        stats.chair.write(chair_file, str(out_dir))
        json.dump(result, stats_file, ensure_ascii=False, indent=2)
        stats_file.write("\n")
        # Flushed and synced here, so that a full disk fails before the first rename.
        for f in (*task_files, quarantine, chair_file, merged, stats_file):
            f.flush()
            os.fsync(f.fileno())
    return result


def _check_invariant(stats: StatsCollector, requests: int, unknown: int, duplicates: int) -> dict:
    records, quarantined = sum(stats.records.values()), sum(stats.quarantined.values())
    holds = records + quarantined == requests + unknown + duplicates
    invariant = {
        "statement": INVARIANT,
        "records": records,
        "quarantined": quarantined,
        "requests": requests,
        "unknown_responses": unknown,
        "duplicate_responses": duplicates,
        "holds": holds,
    }
    if not holds:
        raise InstructgenError(
            f"invariant broken: {records} records + {quarantined} quarantined != {requests} "
            f"requests + {unknown} unknown + {duplicates} duplicate responses; nothing written"
        )
    return invariant


def _write_merged(
    out: IO[bytes], task_files: list[IO[bytes]], index: list[tuple[str, int, int, int]], seed: int
) -> None:
    """All tasks in one list, shuffled with `seed` independently of the responses' order.

    Records are copied from the per-task files (still temp files, open for reading too).
    """
    index.sort()
    random.Random(seed).shuffle(index)
    with ExitStack() as stack:
        maps = []
        for f in task_files:
            f.flush()
            maps.append(stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
        out.write(b"[\n")
        for n, (_, t, offset, length) in enumerate(index):
            if n:
                out.write(b",\n")
            out.write(maps[t][offset : offset + length])
        out.write(b"\n]\n")


def _stats_json(stats: StatsCollector, invariant: dict, seed: int, *inputs: Path) -> dict:
    total = sum(stats.records.values())
    return {
        "inputs": {
            "responses": str(inputs[0]),
            "requests": str(inputs[1]),
            "contexts": str(inputs[2]),
            "seed": seed,
        },
        "models": dict(stats.models.most_common()),
        "records": {t: stats.records[t] for t in TASKS} | {"total": total},
        "records_per_image_mode": {m: stats.image_modes[m] for m in IMAGE_MODES},
        "quarantined": {r: stats.quarantined[r] for r in REASONS if stats.quarantined[r]}
        | {"total": sum(stats.quarantined.values())},
        "quarantined_per_task": dict(sorted(stats.quarantined_per_task.items())),
        "turns_per_conversation": summarize(stats.turns),
        "words_per_answer": {t: summarize(stats.words[t]) for t in TASKS},
        "flags": dict(stats.flags.most_common()),
        "unseen_categories": dict(stats.unseen_categories.most_common(20)),
        "chair": _chair_stats(stats.chair),
        "invariant": invariant,
    }


def _chair_stats(report: ChairReport) -> dict:
    """stats.json's `chair`: overall and per task (fractions in [0, 1]), every mention
    counted (negated ones too, as published)."""
    return report.figures() | {"file": CHAIR_NAME}


def _image_mode_line(stats: dict) -> list[str]:
    modes = stats.get("records_per_image_mode")  # absent from stats.json of older builds
    if not modes:
        return []
    return ["records by image mode: " + ", ".join(f"{m} {n}" for m, n in modes.items())]


def read_stats_report(path: Path):
    """The tables of the stats.json at `path` (or in the folder `path`) as rich renderables.

    A file that is not a stats.json written by `build` raises InputError naming it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "stats.json"
    stats = read_json(path)
    try:
        return stats_report(stats)
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(
            f"{path}: not a stats.json written by `instructgen build` "
            f"({type(e).__name__}: {e}); run `instructgen build` again to rewrite it"
        ) from None


def stats_report(stats: dict):
    """The stats of a build as rich renderables: records and answer lengths, rejections, flags."""
    from rich.console import Group
    from rich.table import Table

    records = Table(title="records", title_justify="left")
    for col in ("task", "records", "quarantined", "words/answer mean", "p50", "p95"):
        records.add_column(col, justify="left" if col == "task" else "right")
    for task in TASKS:
        words = stats["words_per_answer"][task]
        records.add_row(
            task,
            str(stats["records"][task]),
            str(stats["quarantined_per_task"].get(task, 0)),
            *(str(words[k]) if words[k] is not None else "-" for k in ("mean", "p50", "p95")),
        )
    records.add_row("total", str(stats["records"]["total"]), str(stats["quarantined"]["total"]))
    turns = stats["turns_per_conversation"]
    rejections = Table(title="quarantined", title_justify="left")
    rejections.add_column("reason")
    rejections.add_column("count", justify="right")
    for reason, n in stats["quarantined"].items():
        if reason != "total":
            rejections.add_row(reason, str(n))
    if not rejections.rows:
        rejections.add_row("none", "0")
    flags = Table(title="flags (records)", title_justify="left")
    flags.add_column("flag")
    flags.add_column("count", justify="right")
    for name, n in stats["flags"].items():
        flags.add_row(name, str(n))
    if not flags.rows:
        flags.add_row("none", "0")
    inv = stats["invariant"]
    models = stats.get("models") or {}  # absent from stats.json files of older builds
    lines = [
        "answers by model: " + (", ".join(f"{m} ({n})" for m, n in models.items()) or "none named"),
        *_image_mode_line(stats),
        f"turns per conversation: mean {turns['mean']}, p50 {turns['p50']}, p95 {turns['p95']}",
        f"invariant {'holds' if inv['holds'] else 'BROKEN'}: {inv['records']} records + "
        f"{inv['quarantined']} quarantined = {inv['requests']} requests + "
        f"{inv['unknown_responses']} unknown + {inv['duplicate_responses']} duplicate responses",
    ]
    chair = stats.get("chair")  # absent from stats.json of older builds
    tables = [records, rejections, flags]
    if chair:
        tables.append(
            chair_table({"overall": chair["overall"], **chair["by_task"]}, "CHAIR (hallucination)")
        )
    return Group(*tables, *lines)
