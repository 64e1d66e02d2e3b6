"""Where a run folder keeps each file, and read-only readers for them.

The layout is the one `make recipe` writes under `RUN=runs/NAME/`; every path here is relative
to the run folder, and nothing outside it is read.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instructgen.errors import InputError
from instructgen.files import iter_jsonl, read_json

STATS = "data/llava/stats.json"
INSTRUCT = "data/llava/llava_instruct.json"
CHAIR = "data/llava/chair.json"  # a build's own; its figures are in stats.json too
ANSWERS_CHAIR = "eval/chair.json"  # `chair` on the model's answers
REQUESTS = "data/requests.jsonl"
RESPONSES = "data/responses.jsonl"
JOURNAL = "data/journal.sqlite"
ANSWERS = "eval/answers.jsonl"
QUESTIONS = "eval/questions.jsonl"  # a copy of the questions answered, for their categories
JUDGE_REQUESTS = "eval/judge/requests.jsonl"
JUDGE_JOURNAL = "eval/judge/journal.sqlite"
JUDGE_SUMMARY = "eval/judge/summary.json"
POPE_RESULT = "eval/pope/result.json"
POPE_QUESTIONS = "eval/pope/questions.jsonl"  # the three splits' questions, as answered
SCIENCEQA_RESULT = "eval/scienceqa/result.json"
STAGES = {1: "stage1", 2: "stage2"}
TRAIN_LOG = "train_log.jsonl"
PLAN = "plan.json"
TRAINED_WITH = "instructgen_train.json"
TRAINER_STATE = "trainer_state.json"  # in each checkpoint-N folder a stage keeps
RANDOM_WEIGHTS = "towers/random_weights.json"  # written by the demo's tiny-tower builder
SETTINGS_DIR = "settings"  # one file per recipe step: the settings it was made with
# The journal's spent cost and outcome counts over the requests of the current input file.
SPENT_SQL = {
    "cost_usd": "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE line IS NOT NULL",
    "done": "SELECT count(*) FROM requests WHERE line IS NOT NULL AND status = 'done'",
    "failed": "SELECT count(*) FROM requests WHERE line IS NOT NULL AND status = 'failed'",
    "requests": "SELECT count(*) FROM requests WHERE line IS NOT NULL",
    "prompt_tokens": "SELECT coalesce(sum(prompt_tokens), 0) FROM requests WHERE line IS NOT NULL",
    "completion_tokens": (
        "SELECT coalesce(sum(completion_tokens), 0) FROM requests WHERE line IS NOT NULL"
    ),
}


@dataclass(frozen=True)
class RunFolder:
    """A run folder: `path(rel)` for a file, `json(rel)` for its content (None when absent).

    `opened` lists the files read so far, in order: the last one is the file to name when
    its content turns out to have another shape than the report reads."""

    root: Path
    opened: list[str] = field(default_factory=list, compare=False)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def has(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def open(self, rel: str) -> Path:
        """The path of a file about to be read, noted in `opened`."""
        self.opened.append(rel)
        return self.path(rel)

    def json(self, rel: str, shape: type = dict) -> Any:
        """The JSON document at `rel` (None when absent); one of another top-level `shape`
        (a list where an object belongs) is an InputError naming the file."""
        if not self.has(rel):
            return None
        doc = read_json(self.open(rel))
        if not isinstance(doc, shape):
            kind = "an object" if shape is dict else "a list"
            raise InputError(
                f"{self.path(rel)}: expected a JSON {kind} as the step that writes it makes, "
                f"got {type(doc).__name__}; rewrite it with that step"
            )
        return doc

    def jsonl(self, rel: str) -> list[dict] | None:
        return [obj for _, obj in iter_jsonl(self.open(rel))] if self.has(rel) else None

    def log(self, rel: str) -> tuple[list[dict], int | None]:
        """The lines of a log that is appended to as a run goes (train_log.jsonl), and the
        number of its last line when that one is cut short (a crash mid-write, or a report
        made while training), which is left out; a bad line before it is an InputError."""
        lines = self.open(rel).read_text(encoding="utf-8").splitlines()
        numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
        rows: list[dict] = []
        for k, (lineno, line) in enumerate(numbered):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if k == len(numbered) - 1:
                    return rows, lineno
                raise InputError(
                    f"{self.path(rel)}:{lineno}: invalid JSON: {e.msg} (column {e.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"{self.path(rel)}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            rows.append(obj)
        return rows, None

    def query(self, rel: str, sql: str) -> Any:
        """One value of a read-only SQL query on a SQLite file of the run (the journal)."""
        uri = f"{self.open(rel).resolve().as_uri()}?mode=ro"
        try:
            with sqlite3.connect(uri, uri=True) as db:
                return db.execute(sql).fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path(rel)}: not a readable journal ({e})") from None

    def newest_checkpoint_state(self, stage_folder: str) -> str | None:
        """`STAGE/checkpoint-N/trainer_state.json` of the highest N (the schedule a stage ran
        with: records, steps, batches, devices, lr, seed), or None when none is kept."""
        states = [
            p
            for p in self.path(stage_folder).glob(f"checkpoint-*/{TRAINER_STATE}")
            if p.parent.name.split("-", 1)[1].isdigit()
        ]
        if not states:
            return None
        newest = max(states, key=lambda p: int(p.parent.name.split("-", 1)[1]))
        return str(newest.relative_to(self.root))

    def settings(self) -> dict[str, str]:
        """The recipe's settings files (`settings/STEP`, `data/.STEP-settings` of the data
        steps): step name -> the settings line it was made with."""
        files = sorted(self.path("data").glob(".*-settings"))
        if self.path(SETTINGS_DIR).is_dir():
            files += sorted(p for p in self.path(SETTINGS_DIR).iterdir() if p.is_file())
        return {
            p.name.strip(".").removesuffix("-settings"): p.read_text(encoding="utf-8").strip()
            for p in files
        }


def prompt_hashes(requests: list[dict]) -> dict[str, str]:
    """Per task, sha256 (first 12 hex digits) of what every request of the task shares: the
    system prompt and the seed examples, i.e. all messages but the last (the image's context).
    """
    found: dict[str, str] = {}
    for line in requests:
        task = str(line.get("custom_id", "")).rsplit("-", 1)[-1]
        if task in found:
            continue
        prefix = line.get("body", {}).get("messages", [])[:-1]
        digest = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()
        found[task] = digest[:12]
    return found


def lookup(obj: Any, key: str) -> Any:
    """The value at a `/`-separated path of a JSON document (list indices as numbers)."""
    for part in key.split("/"):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj
