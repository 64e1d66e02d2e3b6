"""The dataset card of an export: YAML front matter for the Hub, then how the data was made.

Provenance comes from the files of the run that made the data, each optional:
- requests.jsonl: the teacher model(s) named in the requests, the image mode (what the teacher
  saw), and one hash of the prompts and seeds as sent (every request's messages before the
  image's own context: system prompt and seed examples), so two datasets made with the same
  prompts show the same hash;
- journal.sqlite: the models that answered, tokens and cost in USD;
- quarantine.jsonl, or the stats.json that `build` writes beside its JSON: how many responses
  did not become records.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from instructgen.curate.export import TRAIN, ExportSummary
from instructgen.errors import InputError
from instructgen.files import iter_jsonl, read_json, require_file
from instructgen.generate.images import image_mode

TASK_CATEGORIES = ["image-text-to-text", "visual-question-answering"]
COCO_LICENSE = (
    "COCO images: the annotations are CC BY 4.0 (COCO Consortium); each photograph stays under "
    "the Flickr license listed for it in COCO's `licenses` (the Flickr terms of use apply)."
)
TEACHER_TERMS = (
    "Text written by a teacher model (see above): its provider's terms of use apply to it (for "
    "OpenAI models, OpenAI's terms of use)."
)


@dataclass(frozen=True)
class Provenance:
    """What the files of the generating run say about how the data was made."""

    requests: int = 0
    teacher_models: dict[str, int] = field(default_factory=dict)  # body.model of the requests
    image_modes: dict[str, int] = field(default_factory=dict)  # per request
    prompts_sha256: str | None = None
    prompt_prefixes: int = 0  # distinct system + seed prefixes
    answered_by: dict[str, int] = field(default_factory=dict)  # journal: model of each response
    cost_usd: float | None = None
    unpriced: int = 0  # done requests without a known price
    prompt_tokens: int = 0
    completion_tokens: int = 0
    quarantined: int | None = None
    quarantine_source: str | None = None


def read_provenance(
    data: Path,
    requests: Path | None = None,
    journal: Path | None = None,
    quarantine: Path | None = None,
) -> Provenance:
    """Read what each given file says (see the module doc); bad files raise InputError."""
    fields: dict = {}
    if requests is not None:
        fields |= _from_requests(Path(requests))
    if journal is not None:
        fields |= _from_journal(Path(journal))
    if quarantine is not None:
        fields["quarantined"] = sum(1 for _ in iter_jsonl(Path(quarantine)))
        fields["quarantine_source"] = str(quarantine)
    elif (stats_path := Path(data).parent / "stats.json").is_file():
        stats = read_json(stats_path)
        total = stats.get("quarantined", {}).get("total") if isinstance(stats, dict) else None
        if isinstance(total, int):
            fields["quarantined"] = total
            fields["quarantine_source"] = str(stats_path)
    return Provenance(**fields)


def _from_requests(path: Path) -> dict:
    models: Counter = Counter()
    modes: Counter = Counter()
    prefixes: set[str] = set()
    n = 0
    for lineno, obj in iter_jsonl(path):
        body = obj.get("body")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            raise InputError(f"{path}:{lineno}: not a Batch API request (no body.messages)")
        n += 1
        models[str(body.get("model"))] += 1
        modes[image_mode(messages)] += 1
        # The image's own context is the last message; everything before it is prompt + seeds.
        prefix = json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False)
        prefixes.add(hashlib.sha256(prefix.encode()).hexdigest())
    digest = hashlib.sha256("\n".join(sorted(prefixes)).encode()).hexdigest()
    return {
        "requests": n,
        "teacher_models": dict(models.most_common()),
        "image_modes": dict(modes.most_common()),
        "prompts_sha256": digest if n else None,
        "prompt_prefixes": len(prefixes),
    }


def _from_journal(path: Path) -> dict:
    require_file(path)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            done = "FROM requests WHERE status = 'done'"
            cost, unpriced, prompt, completion = db.execute(
                "SELECT SUM(cost_usd), SUM(cost_usd IS NULL), "
                f"SUM(prompt_tokens), SUM(completion_tokens) {done}"
            ).fetchone()
            answered = db.execute(
                f"SELECT json_extract(response_body, '$.model'), COUNT(*) {done} "
                "GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise InputError(f"{path}: not a journal of `instructgen run` ({e})") from None
    return {
        "answered_by": {str(m): n for m, n in answered},
        "cost_usd": cost,
        "unpriced": unpriced or 0,
        "prompt_tokens": prompt or 0,
        "completion_tokens": completion or 0,
    }


def size_category(rows: int) -> str:
    """The Hub's size category for a row count."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return label
    return "10M<n<100M"


def front_matter(
    summary: ExportSummary, license_id: str, splits: list[str], dataset_info: dict
) -> dict:
    """The YAML header: license, task categories, size, the config with its data files."""
    return {
        "license": license_id,
        "task_categories": TASK_CATEGORIES,
        "language": ["en"],
        "size_categories": [size_category(sum(summary.rows.values()))],
        "pretty_name": summary.data.stem,
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits],
            }
        ],
        "dataset_info": dataset_info,
    }


def render_card(
    summary: ExportSummary,
    provenance: Provenance,
    license_id: str,
    splits: list[str],
    dataset_info: dict,
    location: str,
) -> str:
    """The whole README.md: YAML front matter, then rows, loading, provenance and licenses."""
    header = yaml.safe_dump(
        front_matter(summary, license_id, splits, dataset_info), sort_keys=False
    )
    rows = sum(summary.rows.values())
    per_split = ", ".join(f"{s} {summary.rows[s]}" for s in splits)
    lines = [
        "---",
        header.rstrip(),
        "---",
        "",
        f"# {summary.data.stem}",
        "",
        f"Multimodal instruction-tuning data in LLaVA's style: {rows} rows ({per_split}), "
        f"{summary.images} with an image, exported by instructgen from `{summary.data.name}`.",
        "",
        "Columns: `id`; `images`, the record's image as the original file bytes (empty for "
        "text-only rows); `messages`, the turns with `role` user or assistant and `content` a "
        'list of parts, `{"type": "image"}` where the image goes and `{"type": "text", '
        '"text": ...}`.',
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{location}", split="{TRAIN}")',
        'print(ds[0]["messages"], ds[0]["images"])',
        "```",
        "",
        "Fine-tune with TRL (any vision-language model with a chat template):",
        "",
        "```python",
        "from datasets import load_dataset; from trl import SFTConfig, SFTTrainer",
        'trainer = SFTTrainer(model="llava-hf/llava-1.5-7b-hf", args=SFTConfig(output_dir="sft"),'
        f' train_dataset=load_dataset("{location}", split="{TRAIN}"))',
        "trainer.train()",
        "```",
        "",
        "## How it was made",
        "",
        *_provenance_lines(summary, provenance),
        "",
        "## Licenses",
        "",
        f"- This dataset is marked `{license_id}`.",
        *([f"- {COCO_LICENSE}"] if summary.coco_images else []),
        *(
            [f"- Other images ({summary.images - summary.coco_images} rows): their source's terms."]
            if summary.images > summary.coco_images
            else []
        ),
        f"- {TEACHER_TERMS}",
        "",
    ]
    return "\n".join(lines)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _provenance_lines(summary: ExportSummary, p: Provenance) -> list[str]:
    not_given = "not recorded (export was given no {})"
    lines = [
        "- Teacher model(s) in the requests: "
        + (_counts(p.teacher_models) if p.requests else not_given.format("--requests")),
        "- Models that answered (journal): "
        + (_counts(p.answered_by) if p.answered_by else not_given.format("--journal")),
        "- Image mode (what the teacher saw: none = captions and boxes only, url or inline = "
        "the photograph too): "
        + (
            _counts(p.image_modes)
            if p.requests
            else _counts(dict(summary.image_modes.most_common())) + " (from the records)"
            if summary.image_modes
            else not_given.format("--requests")
        ),
        "- Prompts and seeds (sha256 of every distinct system prompt + seed prefix as sent): "
        + (
            f"`{p.prompts_sha256}` ({p.prompt_prefixes} prefixes over {p.requests} requests)"
            if p.prompts_sha256
            else not_given.format("--requests")
        ),
    ]
    if p.cost_usd is not None or p.answered_by:
        unpriced = f"; {p.unpriced} responses without a known price" if p.unpriced else ""
        lines.append(
            f"- Cost: ${p.cost_usd or 0:.2f} for {p.prompt_tokens} prompt and "
            f"{p.completion_tokens} completion tokens{unpriced}"
        )
    else:
        lines.append("- Cost: " + not_given.format("--journal"))
    lines.append("- Rows per task: " + _counts(dict(sorted(summary.tasks.items()))))
    if p.quarantined is not None:
        lines.append(
            f"- Quarantined: {p.quarantined} responses did not become records "
            f"(from `{Path(p.quarantine_source or '').name}`)"
        )
    else:
        lines.append("- Quarantined: " + not_given.format("--quarantine, and no stats.json"))
    dropped = sum(summary.excluded.values())
    if summary.excluded:
        files = ", ".join(f"`{f.name}` {n}" for f, n in summary.excluded.items())
        lines.append(f"- Evaluation images kept out: {dropped} records dropped ({files})")
    return lines
